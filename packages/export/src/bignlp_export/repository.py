"""``bignlp-export triton``: a checkpoint → a self-contained Triton model repository.

Layout (``REPO``)::

    preprocessing/   config.pbtxt, 1/model.py            text → ids (the checkpoint's tokenizer)
    <name>/          config.pbtxt, 1/model.py, 1/checkpoint/   ids → new ids (bignlp_models.generate, KV cache)
    <name>_stream/   config.pbtxt, 1/model.py            the same model, decoupled: one response per step
    postprocessing/  config.pbtxt, 1/model.py            ids → text
    ensemble/        config.pbtxt, 1/                    text → text (preprocessing → <name> → postprocessing)
    ensemble_stream/ config.pbtxt, 1/                    the same through <name>_stream (gRPC streaming)
    export_config.yaml, manifest.json (kind triton-repository, written last)

``<name>/1`` and ``<name>_stream/1`` also hold ``export_tp.py`` (backend/tp_worker.py): with
``tensor_parallel`` N > 1 each instance starts N-1 workers from it (tensor parallelism).

``<name>/1/checkpoint`` is a weights-only model checkpoint written from the source (no optimizer
state), in the weight dtype asked for: the repository needs nothing outside itself but the server's
environment (tritonserver, torch and our libraries: ``make triton-env``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bignlp_contracts import (
    ArtifactError,
    ConfigError,
    Manifest,
    Producer,
    atomic_directory,
    input_record,
    read_manifest,
    write_manifest,
)
from bignlp_contracts.kinds import TRITON_REPOSITORY

from . import __version__
from .config import DTYPES, check_parallel
from .pbtxt import Settings, ensemble_config, generator_config, tokenizer_config

BACKEND = Path(__file__).parent / "backend"
COMMON = "export_common.py"
TP_WORKER = "export_tp.py"  # tensor parallelism's worker and rank 0's side of it (backend/tp_worker.py)
INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_MODEL"}


def export_repository(checkpoint: str | Path, output: str | Path, *, model_name: str | None = None,
                      max_batch_size: int = 8, data_type: str = "fp32", weight_data_type: str | None = None,
                      instances: int = 1, instance_kind: str = "cpu", pipeline_parallel: int = 1,
                      tensor_parallel: int = 1,
                      max_queue_delay_us: int = 5000,
                      num_threads: int = 0, config: dict[str, Any] | None = None, expected_family: str | None = None,
                      log: Callable[[str], None] = lambda _: None) -> Manifest:
    """Write the repository for ``checkpoint`` (a checkpoint or a run directory: its latest) at ``output``.

    ``data_type``: the dtype the model runs in; ``weight_data_type``: the dtype the repository
    stores (default: as the checkpoint). ``expected_family``: the launcher's run.model_type (gpt3, t5, mt5),
    checked when given. ``instance_kind``: cpu, gpu, or auto (the instance takes
    a GPU when torch sees one). ``pipeline_parallel``: devices each instance spreads the layers over
    (``bignlp_models.placement``; GPU instance on device d takes d, d+1, ... modulo the devices it sees).
    ``tensor_parallel``: devices (and processes) each instance splits every matrix over
    (``bignlp_models.tensor_parallel``; the same devices as ``pipeline_parallel``'s); it must divide the
    attention heads, and goes with ``pipeline_parallel`` 1 only.
    Raises ArtifactError (one line naming the file) for a checkpoint that
    is incomplete or of an unknown family, ConfigError for options out of range.
    """
    import torch

    from bignlp_models import load_state_dict_only, open_checkpoint, save_model_checkpoint
    from bignlp_tokenizers import tokenizer_from_summary

    output = Path(output)
    if data_type not in DTYPES or (weight_data_type or "fp32") not in DTYPES:
        raise ConfigError(f"data type {data_type}/{weight_data_type}: expected one of {', '.join(DTYPES)}")
    if max_batch_size < 1 or instances < 1 or pipeline_parallel < 1 or tensor_parallel < 1:
        raise ConfigError(f"max_batch_size={max_batch_size}, instances={instances}, pipeline_parallel="
                          f"{pipeline_parallel}, tensor_parallel={tensor_parallel}: each must be at least 1")
    check_parallel(tensor_parallel, pipeline_parallel)
    if instance_kind not in INSTANCE_KINDS:
        raise ConfigError(f"instance kind {instance_kind!r}: expected one of {', '.join(INSTANCE_KINDS)}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output}: already holds something", hint="give a new or empty directory")
    reader = open_checkpoint(checkpoint, verify="sha256")  # unknown family, missing files: one line, here
    family = reader.family.name
    wanted = {"gpt3": "gpt", "mt5": "t5"}.get(expected_family or "", expected_family)
    if wanted and wanted != family:
        raise ConfigError(f"run.model_type={expected_family} but {reader.path} holds a {family} model",
                          hint="set run.model_type to the checkpoint's family, or drop it")
    if tensor_parallel > 1:
        from bignlp_models.tensor_parallel import check_tp_size

        try:
            check_tp_size(reader.config, tensor_parallel)
        except ValueError as exc:
            raise ConfigError(f"{exc} (--tensor-parallel, model.tensor_model_parallel_size)",
                              hint=f"use a size that divides {reader.config.num_attention_heads}") from None
    name = model_name or family
    reserved = {"preprocessing", "postprocessing", "ensemble", "ensemble_stream"}
    if name in reserved or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"--model-name {name!r}: must be letters, digits, - or _, and not one of "
                          f"{', '.join(sorted(reserved))}")
    log(f"exporting {reader.path} ({family}, {reader.manifest.summary.get('num_parameters', '?')} parameters) "
        f"to {output}")
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    state, manifest = load_state_dict_only(reader.path, unpad=False, verify="none",
                                           dtype=torch_dtype[weight_data_type] if weight_data_type else None)
    padded = reader.family.config_class(**manifest.summary["model"])
    tokenizer = tokenizer_from_summary(manifest.summary["tokenizer"], reader.path)
    settings = Settings(model_name=name, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                        instances=instances, instance_kind=INSTANCE_KINDS[instance_kind], data_type=data_type,
                        num_threads=num_threads, devices_per_instance=pipeline_parallel,
                        tensor_parallel_size=tensor_parallel)
    producer = Producer("bignlp-export", __version__)
    with atomic_directory(output) as tmp:
        save_model_checkpoint(tmp / name / "1" / "checkpoint", family=reader.family, config=padded, state_dict=state,
                              tokenizer=tokenizer, producer=producer, inputs=[input_record(reader.path)])
        del state
        shared = f"../{name}/1/checkpoint"  # relative to each model's directory
        models = {
            "preprocessing": (tokenizer_config("preprocessing", settings, shared), "preprocessing.py"),
            name: (generator_config(name, settings, "1/checkpoint", decoupled=False), "generator.py"),
            f"{name}_stream": (generator_config(f"{name}_stream", settings, shared, decoupled=True), "generator.py"),
            "postprocessing": (tokenizer_config("postprocessing", settings, shared), "postprocessing.py"),
        }
        for model, (pbtxt, source) in models.items():
            version = tmp / model / "1"
            version.mkdir(parents=True, exist_ok=True)
            (tmp / model / "config.pbtxt").write_text(pbtxt)
            shutil.copyfile(BACKEND / source, version / "model.py")
            shutil.copyfile(BACKEND / "common.py", version / COMMON)
            if source == "generator.py":
                shutil.copyfile(BACKEND / "tp_worker.py", version / TP_WORKER)
        for ensemble, model, streaming in (("ensemble", name, False), ("ensemble_stream", f"{name}_stream", True)):
            (tmp / ensemble / "1").mkdir(parents=True)
            text = ensemble_config(ensemble, model, settings, streaming=streaming)
            (tmp / ensemble / "config.pbtxt").write_text(text)
        import yaml

        (tmp / "export_config.yaml").write_text(yaml.safe_dump(config or {}, sort_keys=False))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        written = write_manifest(
            tmp, TRITON_REPOSITORY, producer=producer, files=files, config=config or {},
            inputs=[input_record(reader.path)],
            summary={"family": family, "model_name": name, "ensemble": "ensemble", "ensemble_stream": "ensemble_stream",
                     "models": sorted([*models, "ensemble", "ensemble_stream"]), "max_batch_size": max_batch_size,
                     "data_type": data_type, "weight_data_type": weight_data_type or "as checkpoint",
                     "instances": instances, "instance_kind": instance_kind,
                     "pipeline_model_parallel_size": pipeline_parallel,
                     "tensor_model_parallel_size": tensor_parallel,
                     "max_position_embeddings": int(getattr(padded, "max_position_embeddings", 0) or 0),
                     "checkpoint": f"{name}/1/checkpoint"})
    log(f"wrote {output} (models: {', '.join(written.summary['models'])})")
    return written


def check_repository(repo: str | Path) -> Manifest:
    """The repository's manifest, after checking every file it lists is there with its size (and the carried
    checkpoint's: files, family and weights' metadata): ArtifactError naming the first missing or truncated file."""
    repo = Path(repo)
    manifest = read_manifest(repo, TRITON_REPOSITORY, verify="size")
    from bignlp_models import open_checkpoint

    checkpoint = repo / manifest.summary.get("checkpoint", "")
    try:
        open_checkpoint(checkpoint, verify="size")  # its files, its family, its dcp/ metadata
    except ArtifactError as exc:
        raise ArtifactError(f"{repo}: the model's weights are not complete: {exc.message}") from None
    return manifest
