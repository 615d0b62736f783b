"""``preprocess``: JSONL files → a ``megatron-dataset`` artifact directory.

Order of writes, so that a directory with ``manifest.json`` is always complete:
remove any old manifest; stream tokens into temporary ``.bin`` files; write the
``.idx`` files; rename all of them into place; copy the tokenizer files; save
``config.yaml``; write ``manifest.json`` last. Any error removes the temporary
files and leaves no manifest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from bignlp_contracts import (
    MEGATRON_DATASET,
    ArtifactError,
    BigNLPError,
    Manifest,
    Producer,
    atomic_output_file,
    atomic_write_bytes,
    dataset_prefix_name,
    input_record,
    read_manifest,
    remove_manifest,
    save_config,
    to_dict,
    write_manifest,
)
from bignlp_contracts.layout import TOKENIZER_DIR
from bignlp_contracts.manifest import MANIFEST_NAME, git_commit
from bignlp_tokenizers import Tokenizer, build_tokenizer

from . import __version__
from .config import PreprocessConfig
from .encode import SKIP_REASONS, EncodeOptions, encode_batches
from .indexed import IndexedDatasetWriter, optimal_dtype
from .readers import InputFile, iter_batches

CONFIG_NAME = "config.yaml"
TYPECODES = {np.dtype(np.uint16): "H", np.dtype(np.int32): "i"}
COMPRESSION_RATIO = 4  # rough size of compressed JSONL text once decompressed


def plan_workers(requested: int, files: list[InputFile], batch_bytes: int) -> int:
    """How many worker processes are worth starting: at most one per 4 batches of input.

    A worker costs ~0.2 s to start (a fresh interpreter, imports, the tokenizer),
    about as long as tokenizing 4 MB in this process, so a small input is done
    sooner without them; 1 means no pool. The output does not depend on it.
    """
    estimate = sum(f.size * (1 if f.compression == "none" else COMPRESSION_RATIO) for f in files)
    return max(1, min(requested, estimate // (4 * batch_bytes)))


def output_names(cfg: PreprocessConfig) -> list[str]:
    """The dataset prefixes (file names without .bin/.idx) ``cfg`` produces, one per JSON key."""
    name = Path(cfg.output_prefix).name
    return [dataset_prefix_name(name, key) for key in cfg.json_keys]


def check_artifact_dir(artifact_dir: Path, names: list[str]) -> None:
    """Refuse to mix two datasets in one directory; re-running the same one is allowed.

    A directory whose manifest describes another artifact, or a dataset with other
    prefixes, is left alone with an ArtifactError.
    """
    if not (artifact_dir / MANIFEST_NAME).is_file():
        return
    try:
        existing = read_manifest(artifact_dir, verify="none")
    except ArtifactError as exc:
        raise ArtifactError(f"{artifact_dir} already holds an artifact with an unreadable manifest: {exc.message}",
                            hint="choose another --output-prefix directory, or delete the old artifact") from None
    if existing.kind != MEGATRON_DATASET.name:
        raise ArtifactError(f"{artifact_dir} already holds a {existing.kind!r} artifact",
                            hint="choose another --output-prefix directory")
    have = sorted(d.get("prefix", "?") for d in existing.summary.get("datasets", []))
    if have != sorted(names):
        raise ArtifactError(
            f"{artifact_dir} already holds dataset {', '.join(have) or '(none)'}; "
            f"this run would add {', '.join(names)} (one dataset artifact per directory)",
            hint="use another directory in --output-prefix, or the same NAME and keys to overwrite",
        )


@dataclass(frozen=True)
class PairsResult:
    """What :func:`write_pairs` wrote: one ``summary.datasets`` entry per pair, plus counts and hashes."""

    datasets: list[dict]
    bin_sha256: dict[str, str]  # "<prefix>.bin" → hex sha256, hashed while writing
    inputs: list[dict]  # input_record of each input, sha256 hashed while reading
    num_documents: int
    input_bytes: int  # uncompressed JSONL bytes
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))  # on_error=skip


def write_pairs(
    files: list[InputFile],
    tokenizer: Tokenizer,
    artifact_dir: Path,
    names: list[str],
    *,
    json_keys: tuple[str, ...],
    append_eod: bool,
    workers: int = 1,
    batch_mb: float = 1.0,
    progress: bool = False,
    on_error: str = "fail",
    split_sentences: bool = False,
) -> PairsResult:
    """Tokenize ``files`` into ``artifact_dir/<name>.bin/.idx``, one pair per JSON key; no manifest.

    Every ``.bin``/``.idx`` is written under a temporary name and renamed into place only
    after all of them are complete, so a crash leaves the old pairs or none.
    """
    mode = file_mode()
    dtype = optimal_dtype(tokenizer.vocab_size).newbyteorder("<")
    options = EncodeOptions(json_keys, append_eod, TYPECODES[dtype.newbyteorder("=")], on_error, split_sentences)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    batch_bytes = max(1, round(batch_mb * 1e6))
    num_documents = 0
    text_bytes = 0
    bar = tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, unit_divisor=1000,
               desc="tokenizing", file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)
    writers: dict[str, IndexedDatasetWriter] = {}
    writing = artifact_dir  # the file being written, for a disk-full message
    raw_done = 0
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            for key, name in zip(json_keys, names):
                writers[key] = IndexedDatasetWriter(_open_output(stack, artifact_dir / f"{name}.bin", mode), dtype)
            batches = iter_batches(files, batch_bytes)
            results = encode_batches(batches, tokenizer, options, workers=plan_workers(workers, files, batch_bytes))
            for encoded in stack.enter_context(contextlib.closing(results)):  # closing: stop the pool on error
                for key, part in encoded.keys.items():
                    writing = artifact_dir / f"{names[json_keys.index(key)]}.bin"
                    writers[key].add_documents(part.tokens, part.sequence_lengths, part.doc_num_sequences)
                num_documents += encoded.num_documents
                text_bytes += encoded.text_bytes
                raw_done += encoded.raw_bytes
                for reason, n in encoded.skipped.items():
                    skipped[reason] += n
                bar.update(encoded.raw_bytes)
            for key, name in zip(json_keys, names):
                writing = artifact_dir / f"{name}.idx"
                writers[key].write_index(_open_output(stack, writing, mode))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        written = sum(w.num_tokens for w in writers.values()) * dtype.itemsize
        total_raw = sum(f.size for f in files)
        estimate = f", about {written * total_raw / raw_done / 1e6:,.1f} MB in all" if raw_done else ""
        raise BigNLPError(
            f"no space left on device writing {writing}: {written / 1e6:,.1f} MB of tokens written{estimate}, "
            f"{shutil.disk_usage(artifact_dir).free / 1e6:,.1f} MB free; the partial files were removed",
            hint="free space or choose another --output-prefix directory, then run the same command again",
        ) from None
    # every .bin/.idx is renamed into place only here, after all were written
    datasets = [
        {
            "prefix": name,
            "json_key": key,
            "num_documents": writers[key].num_documents,
            "num_sequences": len(writers[key].sequence_lengths),
            "num_tokens": writers[key].num_tokens,
            "dtype": dtype.name,
        }
        for key, name in zip(json_keys, names)
    ]
    inputs = []
    for f in files:
        record = input_record(f.path, hash_files=False)
        record["sha256"] = f.sha256  # hashed while streaming
        inputs.append(record)
    bins = {f"{name}.bin": writers[key].sha256 for key, name in zip(json_keys, names)}
    return PairsResult(datasets, bins, inputs, num_documents, text_bytes, skipped)


def copy_tokenizer_files(tokenizer: Tokenizer, artifact_dir: Path) -> dict[str, str]:
    """Copy the tokenizer's files to ``artifact_dir/tokenizer/``; summary key → relative path."""
    return copy_files({key: (f"{TOKENIZER_DIR}/{filename}", Path(source))
                       for key, (filename, source) in tokenizer.files().items()}, artifact_dir)


def copy_files(files: Mapping[str, tuple[str, Path]], artifact_dir: Path) -> dict[str, str]:
    """Copy each ``key: (relative path, source)`` to ``artifact_dir/<relative path>`` atomically, readable
    as ``file_mode`` allows; key → relative path."""
    mode = file_mode()
    for rel, source in files.values():
        atomic_write_bytes(artifact_dir / rel, Path(source).read_bytes())
        os.chmod(artifact_dir / rel, mode)
    return {key: rel for key, (rel, _source) in files.items()}


def preprocess(cfg: PreprocessConfig, *, progress: bool = False) -> Manifest:
    """Tokenize ``cfg.input`` into Megatron ``.bin/.idx`` pairs and return the artifact's manifest.

    ``progress`` shows a tqdm bar over input bytes on stderr (when it is a terminal).
    Raises InputError for unreadable or malformed input, ConfigError for a bad
    tokenizer setting and ArtifactError if the directory holds another artifact.
    """
    start = time.perf_counter()
    files = [InputFile(p) for p in cfg.input]
    tokenizer = build_tokenizer(cfg.tokenizer)
    prefix = Path(cfg.output_prefix)
    artifact_dir = prefix.parent
    names = output_names(cfg)
    check_artifact_dir(artifact_dir, names)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    remove_manifest(artifact_dir)

    pairs = write_pairs(files, tokenizer, artifact_dir, names, json_keys=cfg.json_keys, append_eod=cfg.append_eod,
                        workers=cfg.workers, batch_mb=cfg.batch_mb, progress=progress, on_error=cfg.on_error,
                        split_sentences=cfg.split_sentences)
    tok_files = copy_tokenizer_files(tokenizer, artifact_dir)
    save_config(cfg, artifact_dir / CONFIG_NAME)
    os.chmod(artifact_dir / CONFIG_NAME, file_mode())

    elapsed = time.perf_counter() - start
    summary = {
        "datasets": pairs.datasets,
        "tokenizer": tokenizer_summary(tokenizer, tok_files),
        "num_documents": pairs.num_documents,
        "num_tokens": sum(d["num_tokens"] for d in pairs.datasets),
        "input_bytes": pairs.input_bytes,
        "skipped": pairs.skipped,
        "split_sentences": cfg.split_sentences,
        "elapsed_s": round(elapsed, 3),
        "mb_per_s": round(pairs.input_bytes / 1e6 / max(elapsed, 1e-9), 3),
    }
    manifest = write_manifest(
        artifact_dir,
        MEGATRON_DATASET,
        producer=producer(),
        files=[*pairs.bin_sha256, *(f"{n}.idx" for n in names), *tok_files.values(), CONFIG_NAME],
        config=to_dict(cfg),
        inputs=pairs.inputs,
        summary=summary,
        hashes=pairs.bin_sha256,
    )
    os.chmod(artifact_dir / MANIFEST_NAME, file_mode())
    return manifest


def tokenizer_summary(tokenizer: Tokenizer, tok_files: dict[str, str]) -> dict:
    """``summary.tokenizer`` of a dataset manifest."""
    return tokenizer.summary(tok_files)


def producer() -> Producer:
    """This package as the producer of an artifact."""
    return Producer("bignlp-dataprep", __version__, git_commit(Path(__file__).parent))


def file_mode() -> int:
    """rw for everyone the umask allows: temporary files are created 0600, datasets are shared."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _open_output(stack: contextlib.ExitStack, path: Path, mode: int) -> BinaryIO:
    """A temporary file renamed to ``path`` when ``stack`` closes without error (removed otherwise)."""
    f = stack.enter_context(atomic_output_file(path))
    os.fchmod(f.fileno(), mode)
    return f


def artifact_paths(manifest: Manifest, artifact_dir: str | os.PathLike) -> list[Path]:
    """The .bin/.idx paths of a dataset manifest, for printing."""
    artifact_dir = Path(artifact_dir)
    return [artifact_dir / f"{d['prefix']}{ext}" for d in manifest.summary["datasets"] for ext in (".bin", ".idx")]
