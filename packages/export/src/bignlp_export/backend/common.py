"""Shared by the repository's Python models (copied beside each ``model.py`` as ``export_common.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def parameters(args: dict) -> dict[str, str]:
    """The ``parameters { key: ... value: { string_value: ... } }`` of the model's config.pbtxt."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def checkpoint_dir(args: dict, params: dict[str, str]) -> Path:
    """The checkpoint the repository carries, relative to this model's directory (``model_repository``)."""
    return (Path(args["model_repository"]) / params["checkpoint"]).resolve()


def load_tokenizer(path: Path):
    """The checkpoint's tokenizer (``tokenizer/`` described by its manifest), without torch."""
    from bignlp_contracts import read_manifest
    from bignlp_tokenizers import tokenizer_from_summary

    manifest = read_manifest(path, verify="none")
    return tokenizer_from_summary(manifest.summary["tokenizer"], path)


def optional(request, name: str):
    """The input tensor ``name`` as numpy, or None when the request does not carry it."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def strings(array: np.ndarray) -> list[str]:
    """A BYTES tensor's elements as text (UTF-8)."""
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]


def error(message: str):
    """A per-request error response: the request fails, the batch's others and the server go on."""
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
