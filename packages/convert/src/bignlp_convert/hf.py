"""Hugging Face models: ``to_hf`` writes a checkpoint as a transformers model directory, ``from_hf`` imports one.

The family's name map (``maps.hf_map``) says which transformers class computes the model (or which
option blocks it), renames and reshapes each weight, and translates ``config.json``. ``to_hf``
reads the checkpoint a layer at a time and streams each tensor into safetensors files whose headers
were planned from the meta model, so the model is never in memory; padded vocabulary rows are not
exported (Hugging Face's ``vocab_size`` is the tokenizer's). ``from_hf`` re-pads them with zeros.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from bignlp_contracts import HF_MODEL, ArtifactError, ConfigError, Producer, input_record, write_manifest
from bignlp_models import get_family, open_checkpoint, padded_vocab_size, save_model_checkpoint

from . import __version__
from .config import VOCAB_DIVISIBLE_BY
from .hf_tokenizer import export_tokenizer, import_tokenizer
from .maps import hf_map
from .output import check_output_dir, output_directory
from .safetensors_writer import DTYPES, SafetensorsWriter, tensor_bytes
from .stream import Progress, iter_groups, layer_groups, mmap_large_buffers, nbytes

PRODUCER = Producer("bignlp-convert", __version__)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ARCH_FAMILY = {"GPT2LMHeadModel": "gpt", "T5ForConditionalGeneration": "t5", "MT5ForConditionalGeneration": "t5"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int:
    """``5GB`` → 5·10⁹ bytes (KB/MB/GB decimal, KiB/MiB/GiB binary, or plain bytes); ConfigError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(text), flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--max-shard-size {text!r} is not a size", hint="e.g. 5GB, 500MB, 2GiB or a byte count")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


def _log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda line: None)


def to_hf(checkpoint: str | os.PathLike, output: str | os.PathLike, *, dtype: str | None = None,
          max_shard_size: int = 5 * 10**9, verify: str = "sha256",
          log: Callable[[str], None] | None = None) -> Path:
    """Write ``checkpoint`` as a Hugging Face model directory ``output`` (an ``hf-model`` artifact)."""
    log = _log(log)
    check_output_dir(output)
    mmap_large_buffers()
    reader = open_checkpoint(checkpoint, verify=verify)
    fmap = hf_map(reader.family.name)
    tok = reader.tokenizer()
    cfg = reader.config  # vocab_size: the tokenizer's (unpadded)
    # a model imported from Hugging Face goes back as the class it came from (T5 or mT5)
    arch = fmap.architecture(cfg, tok, previous=reader.manifest.summary.get("imported_from"))
    cast = TORCH_DTYPES[dtype] if dtype else None
    groups = layer_groups(reader.shapes, reader.family)
    # plan every output tensor from meta tensors: the safetensors headers come before the data
    plan: list[tuple[str, torch.Size, torch.dtype]] = []
    for names in groups:
        metas = {n: torch.empty(reader.shapes[n][0], dtype=cast or reader.shapes[n][1], device="meta")
                 for n in names}
        plan += [(name, t.shape, t.dtype) for name, t in fmap.to_hf(metas, cfg)]
    shards: list[list[tuple[str, torch.Size, torch.dtype]]] = [[]]
    size = 0
    for entry in plan:
        b = tensor_bytes(entry[1], entry[2])
        if shards[-1] and size + b > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += b
    files = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    saved_dtype = cast or next(iter(reader.shapes.values()))[1]
    log(f"{reader.path} → {output}: {arch}, {len(plan)} tensors in {len(files)} safetensors file(s), "
        f"{str(saved_dtype).removeprefix('torch.')}")
    with output_directory(output) as tmp:
        writers = [SafetensorsWriter(tmp / f, s) for f, s in zip(files, shards)]
        where = {name: w for w, s in zip(writers, shards) for name, _, _ in s}
        progress = Progress("to-hf", nbytes(reader.shapes, cast), log=log)
        for group in iter_groups(reader, dtype=cast, progress=progress):
            for name, t in fmap.to_hf(group, cfg):
                where[name].write(name, t)
        for w in writers:
            w.close()
        progress.finish()
        if len(files) > 1:
            index = {"metadata": {"total_size": sum(w.total for w in writers)},
                     "weight_map": {name: files[writers.index(w)] for name, w in where.items()}}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
            files.append("model.safetensors.index.json")
        dtype_name = str(saved_dtype).removeprefix("torch.")
        config = fmap.hf_config(cfg, reader.vocab_size, tok, dtype_name, arch=arch)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
                      if config.get(k) is not None}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        files += ["config.json", "generation_config.json"] + export_tokenizer(tok, tmp, arch)
        write_manifest(tmp, HF_MODEL, producer=PRODUCER, files=sorted(files), inputs=[input_record(reader.path)],
                       hashes={f: w.sha256 for f, w in zip(files, writers)},
                       summary={"family": reader.family.name, "architecture": arch, "dtype": dtype_name,
                                "vocab_size": reader.vocab_size, "shards": len(shards),
                                "num_parameters": int(reader.manifest.summary.get("num_parameters", 0))})
    log(f"wrote {output}")
    return Path(output)


def _read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (hf_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif (hf_dir / "pytorch_model.bin").is_file():
        return torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
    else:
        raise ArtifactError(f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
                            hint="give the directory save_pretrained wrote")
    out = {}
    for name in files:
        path = hf_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (named by model.safetensors.index.json)")
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    out[key] = f.get_tensor(key)
        except Exception as e:  # a truncated or foreign file: safetensors' own message, one line
            raise ArtifactError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return out


def from_hf(hf_dir: str | os.PathLike, output: str | os.PathLike, *, log: Callable[[str], None] | None = None) -> Path:
    """Import a Hugging Face GPT-2 / T5 v1.1 / mT5 directory as a model checkpoint at ``output``."""
    log = _log(log)
    hf_dir = Path(hf_dir)
    check_output_dir(output)
    config_file = hf_dir / "config.json"
    if not config_file.is_file():
        raise ArtifactError(f"{hf_dir}: no config.json (not a Hugging Face model directory)")
    hf_cfg = json.loads(config_file.read_text())
    archs = hf_cfg.get("architectures") or []
    arch = next((a for a in archs if a in _ARCH_FAMILY), None)
    if arch is None:
        raise ConfigError(f"{config_file}: architectures={archs} is not supported",
                          hint=f"from-hf imports {', '.join(_ARCH_FAMILY)}")
    family = get_family(_ARCH_FAMILY[arch])
    fmap = hf_map(family.name)
    with tempfile.TemporaryDirectory(prefix="bignlp-convert-tok-") as workdir:
        tok = import_tokenizer(hf_dir, arch, Path(workdir))
        if tok.vocab_size > hf_cfg["vocab_size"]:
            raise ArtifactError(f"{hf_dir}: the tokenizer has {tok.vocab_size} tokens, config.json vocab_size "
                                f"{hf_cfg['vocab_size']}")
        padded = padded_vocab_size(hf_cfg["vocab_size"], VOCAB_DIVISIBLE_BY)
        cfg = fmap.config_from_hf(hf_cfg, padded)
        log(f"{hf_dir} ({arch}) → {output}")
        state = fmap.from_hf(_read_hf_weights(hf_dir), cfg)
        expected = family.build_meta(cfg).state_dict()
        for name, meta in expected.items():
            t = state.get(name)
            if t is None:
                raise ArtifactError(f"{hf_dir}: no weight for {name} (its {arch} weights are incomplete)")
            if t.shape[0] == hf_cfg["vocab_size"] < meta.shape[0]:  # re-pad the vocabulary rows with zeros
                t = torch.cat([t, t.new_zeros(meta.shape[0] - t.shape[0], *t.shape[1:])])
            if tuple(t.shape) != tuple(meta.shape):
                raise ArtifactError(f"{hf_dir}: {name} is {list(t.shape)}, config.json makes it {list(meta.shape)}")
            state[name] = t
        extra = sorted(set(state) - set(expected))
        if extra:
            raise ArtifactError(f"{hf_dir}: weights our {family.name} has no place for: {extra[:3]}")
        save_model_checkpoint(output, family=family, config=cfg, state_dict=state, tokenizer=tok, producer=PRODUCER,
                              inputs=[input_record(config_file)], summary={"imported_from": arch},
                              run_config=fmap.run_config(cfg))
    log(f"wrote {output}")
    return Path(output)


__all__ = ["DTYPES", "parse_size", "to_hf", "from_hf"]
