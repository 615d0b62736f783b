"""NeMo 1.x ``.nemo`` archives: ``to_nemo`` writes one at any tensor/pipeline layout, ``from_nemo`` imports one.

The layout rules (FACTS: NeMo 1.11) are family-agnostic here; the family's name map
(``maps.nemo_map``) says where each weight goes: its NeMo key, which pipeline stages hold it and
along which dimension tensor parallelism splits it. ``to_nemo`` reads the checkpoint a layer at a
time and streams every piece into its rank's ``model_weights.ckpt`` (``torchzip``), so no rank's
state dict is ever whole in memory; the rank files are written in place inside the uncompressed
tar, laid out beforehand from their planned sizes (``tarlayout``). The
vocabulary is padded as NeMo pads it for the archive's layout (a multiple of
``make_vocab_size_divisible_by`` × TP, zero rows). ``from_nemo`` reads an archive (gzip ones from
before NeMo 1.7 too), checks every shard against ``model_config.yaml``, merges the tensor-parallel
pieces and renumbers the stage-local layers.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from bignlp_contracts import NEMO_ARCHIVE, ArtifactError, ConfigError, Producer, input_record, write_manifest
from bignlp_models import get_family, open_checkpoint, padded_vocab_size, save_model_checkpoint
from bignlp_tokenizers import TokenizerSpec, build_tokenizer

from . import __version__
from .config import VOCAB_DIVISIBLE_BY
from .maps import nemo_map
from .output import check_output_dir, output_directory
from .stream import Progress, iter_groups, layer_groups, mmap_large_buffers, nbytes
from .tarlayout import TarLayout, sha256_of
from .torchzip import TorchSaveWriter, torch_save_size

PRODUCER = Producer("bignlp-convert", __version__)
WEIGHTS = "model_weights.ckpt"
# our tokenizer types ↔ NeMo's tokenizer section (library, type)
_NEMO_TOKENIZERS = {"gpt2-bpe": ("megatron", "GPT2BPETokenizer"),
                    "bert-wordpiece-lowercase": ("megatron", "BertWordPieceLowerCase"),
                    "bert-wordpiece-case": ("megatron", "BertWordPieceCase"),
                    "sentencepiece": ("sentencepiece", None), "huggingface": ("huggingface", None)}
_FILE_KEYS = {"vocab_file": "vocab_file", "merges_file": "merge_file", "tokenizer_model": "model",
              "tokenizer_file": "tokenizer_file"}


def rank_dir(tp_rank: int, pp_rank: int, tp: int, pp: int) -> str:
    """Where a rank's weights live in the archive ("" for one rank), as NeMo 1.x names it."""
    if pp > 1:
        return f"tp_rank_{tp_rank:02d}_pp_rank_{pp_rank:03d}"
    return f"mp_rank_{tp_rank:02d}" if tp > 1 else ""


def _placements(fmap, cfg, tp: int, pp: int, split_rank: int | None):
    """our name → [(stage, NeMo key, split dim)] for every weight of the model."""
    stages = fmap.stage_layers(cfg, pp, split_rank)
    where_layer = {}
    for s, stacks in enumerate(stages):
        for stack, layers in stacks.items():
            for local, i in enumerate(layers):
                where_layer[(stack, i)] = (s, local)
    first_dec = next((s for s, st in enumerate(stages) if "decoder_layers" in st), 0)
    encoder_stages = [s for s, st in enumerate(stages) if "encoder_layers" in st]
    named = {"first": [0], "last": [pp - 1], "last_if_pipelined": [pp - 1] if pp > 1 else [],
             "split": [first_dec], "last_encoder": encoder_stages[-1:]}

    def place(name: str) -> list[tuple[int, str, int | None]]:
        if name in fmap.TOP:
            out = []
            for key, rule, split in fmap.TOP[name]:
                # a named stage, or every stage holding the stack ``rule`` names
                holders = named[rule] if rule in named else [s for s, st in enumerate(stages) if rule in st]
                out += [(s, key, split) for s in holders]
            return out
        stack, i, rest = name.split(".", 2)
        if (stack, int(i)) not in where_layer or rest not in fmap.LAYER[stack]:
            raise KeyError(f"no NeMo place for {name!r}")
        s, local = where_layer[(stack, int(i))]
        key, split = fmap.LAYER[stack][rest]
        return [(s, f"{fmap.STACKS[stack]}{local}.{key}", split)]

    return place


def _nemo_tokenizer(tok, members: dict[str, Path]) -> dict[str, Any]:
    """NeMo's tokenizer section; ``members`` gets archive name → source file of each tokenizer file."""
    library, type_ = _NEMO_TOKENIZERS.get(tok.type, (None, None))
    if library is None:
        raise ConfigError(f"tokenizer type {tok.type} has no NeMo tokenizer")
    section: dict[str, Any] = {"library": library, "type": type_, "model": None, "vocab_file": None,
                               "merge_file": None, "delimiter": None}
    for key, (name, source) in tok.files().items():
        member = f"{uuid.uuid4().hex}_{name}"
        members[member] = Path(source)
        section[_FILE_KEYS[key]] = f"nemo:{member}"
    if tok.num_sentinel_tokens:
        section["num_sentinel_tokens"] = tok.num_sentinel_tokens
    if tok.type == "huggingface":
        section["eod_token"] = tok.eod_token
    return section


def to_nemo(checkpoint: str | os.PathLike, output_nemo: str | os.PathLike, *, tensor_model_parallel_size: int = 1,
            pipeline_model_parallel_size: int = 1, pipeline_model_parallel_split_rank: int | None = None,
            expected_family: str | None = None, verify: str = "sha256",
            log: Callable[[str], None] | None = None) -> Path:
    """Write ``checkpoint`` as the NeMo 1.x archive ``output_nemo`` (its directory becomes a nemo-archive artifact)."""
    log = log or (lambda line: None)
    output_nemo = Path(output_nemo)
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    check_output_dir(output_nemo.parent)
    mmap_large_buffers()
    reader = open_checkpoint(checkpoint, verify=verify)
    family = reader.family.name
    if expected_family and expected_family != family:
        raise ConfigError(f"model.model_type={expected_family} but {reader.path} holds a {family} model",
                          hint=f"use model.model_type={family} (or the {family} conversion config)")
    fmap = nemo_map(family)
    cfg = reader.config
    fmap.check_layout(cfg, tp, pp, pipeline_model_parallel_split_rank)
    place = _placements(fmap, cfg, tp, pp, pipeline_model_parallel_split_rank)
    padded = padded_vocab_size(reader.vocab_size, VOCAB_DIVISIBLE_BY, tp)
    shapes = reader.shapes

    def pieces(name: str, t: torch.Tensor):
        """(stage, tp rank, NeMo key, piece) of one of our tensors."""
        for stage, key, split in place(name):
            if split is None:
                for r in range(tp):
                    yield stage, r, key, t
            elif name in fmap.VOCAB:  # vocabulary-parallel over the padded rows; only the last piece is padded
                rows = padded // tp
                for r in range(tp):
                    piece = t[r * rows:(r + 1) * rows]
                    if piece.shape[0] < rows:
                        piece = torch.cat([piece, piece.new_zeros(rows - piece.shape[0], *piece.shape[1:])])
                    yield stage, r, key, piece
            else:
                if t.shape[split] % tp:
                    raise ConfigError(f"--tensor-model-parallel-size {tp} does not divide {name} "
                                      f"{list(t.shape)} along dim {split}")
                for r, piece in enumerate(torch.chunk(t, tp, dim=split)):
                    yield stage, r, key, piece

    plans: dict[tuple[int, int], list] = {(s, r): [] for s in range(pp) for r in range(tp)}
    for name in (n for names in layer_groups(shapes, reader.family) for n in names):  # the order they stream in
        shape, dtype = shapes[name]
        meta = torch.empty(shape, dtype=dtype, device="meta")
        if name in fmap.VOCAB:
            meta = torch.empty((reader.vocab_size, *shape[1:]), dtype=dtype, device="meta")
        for stage, r, key, piece in pieces(name, meta):
            plans[(stage, r)].append((key, piece.shape, piece.dtype))
    log(f"{reader.path} → {output_nemo}: {family}, TP {tp} × PP {pp}, vocabulary {reader.vocab_size} padded to "
        f"{padded}")
    with output_directory(output_nemo.parent) as tmp:
        members: dict[str, Path] = {}
        dtype = next(iter(shapes.values()))[1]
        precision = {torch.bfloat16: "bf16", torch.float16: 16}.get(dtype, 32)
        config = fmap.model_config(cfg, tokenizer=_nemo_tokenizer(reader.tokenizer(), members), tp=tp, pp=pp,
                                   split_rank=pipeline_model_parallel_split_rank, divisible_by=VOCAB_DIVISIBLE_BY,
                                   precision=precision)
        config["vocab_size"] = reader.vocab_size
        # every rank file's size is known from its plan, so the archive is laid out first and each
        # rank file is written straight into its place: the weights are written once
        layout = TarLayout()
        layout.add_bytes("./model_config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
        for member, source in members.items():
            layout.add_file(f"./{member}", source)
        names = {}
        for (stage, r), plan in plans.items():
            d = rank_dir(r, stage, tp, pp)
            if d:
                layout.add_dir(f"./{d}")
            names[(stage, r)] = f"./{d}/{WEIGHTS}" if d else f"./{WEIGHTS}"
            layout.reserve(names[(stage, r)], torch_save_size(plan))
        nemo_part = tmp / (output_nemo.name + ".part")
        fd, regions = layout.write(nemo_part)
        try:
            writers = {key: TorchSaveWriter(regions[names[key]], plan) for key, plan in plans.items()}
            progress = Progress("to-nemo", nbytes(shapes), log=log)
            for group in iter_groups(reader, progress=progress):
                for name, t in group.items():
                    for stage, r, key, piece in pieces(name, t):
                        writers[(stage, r)].write(key, piece)
            for w in writers.values():
                w.close()
            for region in regions.values():
                region.check()
        finally:
            os.close(fd)
        progress.finish()
        digest = sha256_of(nemo_part)
        nemo_part.rename(tmp / output_nemo.name)
        write_manifest(tmp, NEMO_ARCHIVE, producer=PRODUCER, files=[output_nemo.name],
                       hashes={output_nemo.name: digest},
                       inputs=[input_record(reader.path)],
                       summary={"nemo_file": output_nemo.name, "family": family, "model": dict(config),
                                "tokenizer": reader.manifest.summary.get("tokenizer"),
                                "tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp})
    log(f"wrote {output_nemo}")
    return output_nemo


def _family_of(y: dict[str, Any]) -> str:
    target = str(y.get("target", ""))
    if "T5" in target or "seq_length_dec" in y or "encoder_arch" in y or isinstance(y.get("encoder"), dict):
        return "t5"
    if "GPT" in target or "encoder_seq_length" in y or not target:
        return "gpt"
    raise ArtifactError(f"model_config.yaml target={target!r}: not a NeMo GPT or T5/mT5 model")


def _tokenizer_from_yaml(section: dict[str, Any], extract: Callable[[str, Path], Path], where: Path):
    library, nemo_type = section.get("library"), section.get("type")
    ours = next((k for k, (lib, t) in _NEMO_TOKENIZERS.items() if lib == library and (t is None or t == nemo_type)),
                None)
    if ours is None:
        raise ArtifactError(f"model_config.yaml tokenizer library={library!r} type={nemo_type!r} is not supported",
                            hint="GPT2BPETokenizer, BertWordPieceLowerCase/Case (megatron), sentencepiece, huggingface")
    files = {}
    for ours_key, nemo_key in _FILE_KEYS.items():
        ref = section.get(nemo_key)
        if isinstance(ref, str) and ref.startswith("nemo:"):
            member = ref.removeprefix("nemo:")
            # NeMo stores files as {uuid4 hex}_{name}; give the tokenizer back its name
            name = member.split("_", 1)[1] if len(member) > 33 and member[32] == "_" else member
            files[ours_key] = str(extract(member, where / name))
        elif ref:
            raise ArtifactError(f"model_config.yaml tokenizer.{nemo_key}={ref!r} is not a file in the archive "
                                "(nemo:NAME)")
    return build_tokenizer(TokenizerSpec(ours, num_sentinel_tokens=int(section.get("num_sentinel_tokens") or 0),
                                         eod_token=section.get("eod_token"), **files))


def from_nemo(nemo_file: str | os.PathLike, output: str | os.PathLike, *,
              log: Callable[[str], None] | None = None) -> Path:
    """Import the NeMo 1.x GPT or T5/mT5 archive ``nemo_file`` (any TP/PP; tar or gzip tar) as a checkpoint."""
    log = log or (lambda line: None)
    nemo_file = Path(nemo_file)
    check_output_dir(output)
    if not nemo_file.is_file():
        raise ArtifactError(f"--nemo {nemo_file}: no such file")
    try:
        tar = tarfile.open(nemo_file, "r:*")  # noqa: SIM115 - closed below; uncompressed, or gzip before NeMo 1.7
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}  # reads to the end
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        # tarfile's "could not be opened" lists every compression it tried: say what matters
        reason = "no tar header" if "could not be opened" in str(e) else str(e).splitlines()[0]
        raise ArtifactError(f"{nemo_file}: not a complete .nemo archive (a tar, or a gzip tar): {reason}",
                            hint="was it copied completely? compare its size with the original") from None
    with tar, tempfile.TemporaryDirectory(prefix="from-nemo-") as work_dir:
        work = Path(work_dir)

        def extract(member: str, dest: Path) -> Path:
            if member not in members:
                raise ArtifactError(f"{nemo_file}: has no {member}",
                                    hint="the archive is incomplete, or was written for another layout")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with tar.extractfile(members[member]) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
            except (tarfile.TarError, EOFError, OSError) as e:
                raise ArtifactError(f"{nemo_file}: {member} cannot be read ({e})") from None
            return dest

        try:
            y = yaml.safe_load(extract("model_config.yaml", work / "model_config.yaml").read_text())
        except yaml.YAMLError as e:
            raise ArtifactError(f"{nemo_file}: model_config.yaml is not YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(y, dict) or "hidden_size" not in y:
            raise ArtifactError(f"{nemo_file}: model_config.yaml has no model keys (hidden_size, num_layers, ...)")
        family = get_family(_family_of(y))
        fmap = nemo_map(family.name)
        tp, pp = int(y.get("tensor_model_parallel_size") or 1), int(y.get("pipeline_model_parallel_size") or 1)
        split = y.get("pipeline_model_parallel_split_rank")
        tok = _tokenizer_from_yaml(y.get("tokenizer") or {}, extract, work / "tokenizer")
        padded = padded_vocab_size(tok.vocab_size, int(y.get("make_vocab_size_divisible_by") or VOCAB_DIVISIBLE_BY), tp)
        cfg = fmap.config_from_yaml(y, padded)
        try:
            fmap.check_layout(cfg, tp, pp, split)
        except ConfigError as e:
            raise ArtifactError(f"{nemo_file}: model_config.yaml's layout: {e.message}") from None
        place = _placements(fmap, cfg, tp, pp, split)
        names = {(s, r): (f"{rank_dir(r, s, tp, pp)}/{WEIGHTS}" if rank_dir(r, s, tp, pp) else WEIGHTS)
                 for s in range(pp) for r in range(tp)}
        missing = [n for n in names.values() if n not in members]
        if missing:
            raise ArtifactError(f"{nemo_file}: model_config.yaml says TP {tp} × PP {pp} but {missing[0]} is missing"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                                hint="the archive is incomplete or its yaml was edited")
        log(f"{nemo_file} → {output}: {family.name}, TP {tp} × PP {pp}")
        shards = {}
        for key, name in names.items():
            path = extract(name, work / "ranks" / name)
            try:
                shards[key] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # torch's message for a damaged zip or pickle, on one line
                raise ArtifactError(f"{nemo_file}: {name} is not a readable torch.save file "
                                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        expected = family.build_meta(cfg).state_dict()
        state = {}
        for ours, meta in expected.items():
            stage, key, dim = place(ours)[0]
            parts = []
            for r in range(tp):
                sd = shards[(stage, r)]
                if key not in sd:
                    raise ArtifactError(f"{nemo_file}: {names[(stage, r)]} has no {key}")
                parts.append(sd[key])
            t = parts[0] if dim is None else torch.cat(parts, dim=dim)
            if tuple(t.shape) != tuple(meta.shape):
                raise ArtifactError(f"{nemo_file}: {key} in {names[(stage, 0)]} is {list(t.shape)} "
                                    f"(over {tp} rank(s)); model_config.yaml makes it {list(meta.shape)}")
            state[ours] = t
        save_model_checkpoint(output, family=family, config=cfg, state_dict=state, tokenizer=tok, producer=PRODUCER,
                              inputs=[input_record(nemo_file)], summary={"imported_from": "nemo"},
                              run_config=fmap.run_config(cfg))
    log(f"wrote {output}")
    return Path(output)
