"""``merge``: several dataset pairs (partitions) → one ``.bin/.idx`` pair per JSON key, in a new artifact.

The merged ``.bin`` is the inputs' ``.bin`` files concatenated (streamed, never in
memory); the ``.idx`` has every input's sequence lengths in order, byte pointers
recomputed from them, and each input's document index shifted by the number of
sequences before it (what megatron-core's ``IndexedDatasetBuilder.add_index`` and
Megatron-LM's ``tools/merge_datasets.py`` do). So merging the outputs of
preprocessing ``a.jsonl`` and ``b.jsonl`` separately gives the same bytes as
preprocessing ``a.jsonl b.jsonl`` in one run. Inputs must agree on the token dtype
and the tokenizer (type, vocabulary size, end of document and the bytes of its
files); the order of ``inputs`` is the order of the documents.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bignlp_contracts import (
    MEGATRON_DATASET,
    ArtifactError,
    BigNLPError,
    ConfigError,
    DatasetRef,
    InputError,
    Manifest,
    dataset_prefix_name,
    input_record,
    remove_manifest,
    resolve_dataset,
    save_config,
    to_dict,
    write_manifest,
)
from bignlp_contracts.manifest import MANIFEST_NAME, sha256_file
from bignlp_tokenizers import TOKENIZER_FILE_KEYS

from .encode import SKIP_REASONS
from .indexed import IndexedDatasetReader, write_index
from .preprocess import CONFIG_NAME, _open_output, check_artifact_dir, copy_files, file_mode, producer

COPY_CHUNK = 16 << 20


@dataclass(frozen=True, kw_only=True)
class MergeConfig:
    """What ``bignlp-dataprep merge`` did; saved as the merged artifact's ``config.yaml``."""

    # Dataset artifact directories (every pair in them) or DIR/NAME_<key>_document prefixes, in document order.
    input: tuple[str, ...] = ()
    # DIR/NAME: writes DIR/NAME_<key>_document.bin/.idx, one pair per JSON key of the inputs.
    output_prefix: str = ""

    def __post_init__(self) -> None:
        if len(self.input) < 1:
            raise ConfigError("merge: no inputs", hint="give --input DIR_OR_PREFIX [DIR_OR_PREFIX...]")
        if not self.output_prefix or self.output_prefix.endswith(("/", os.sep)) or os.path.isdir(self.output_prefix):
            raise ConfigError(f"--output-prefix {self.output_prefix!r}: give DIR/NAME (a file name prefix)")


def _tokenizer_identity(ref: DatasetRef) -> dict:
    """What must be equal for two datasets' tokens to mean the same: the summary and the files' bytes."""
    tok = dict(ref.tokenizer)
    ident = {k: tok.get(k) for k in ("type", "vocab_size", "eod_id")}
    for key in TOKENIZER_FILE_KEYS:
        path = ref.tokenizer_file(key)
        if path is not None:
            ident[key] = sha256_file(path)
    return ident


def _describe(ident: dict) -> str:
    return ", ".join(f"{k} {v if 'file' not in k and 'model' not in k else str(v)[:12]}" for k, v in ident.items())


def collect_inputs(inputs: Sequence[str]) -> dict[str, list[DatasetRef]]:
    """JSON key → the input pairs to merge for it, in order; refuses dtype or tokenizer mismatches."""
    groups: dict[str, list[DatasetRef]] = {}
    first: tuple[str, dict, str] | None = None  # (input, tokenizer identity, dtype)
    keys_of_first: list[str] | None = None  # an artifact of a run recipe holds several pairs per key
    for source in inputs:
        refs = resolve_dataset(source, verify="size")
        keys = [r.entry.get("json_key") or _key_of(r.prefix.name) for r in refs]
        if keys_of_first is None:
            keys_of_first = sorted(set(keys))
        elif sorted(set(keys)) != keys_of_first:
            raise InputError(f"merge: {source} has JSON key(s) {', '.join(sorted(set(keys)))}, but {inputs[0]} has "
                             f"{', '.join(keys_of_first)}", hint="merge inputs made with the same --json-keys")
        ident = _tokenizer_identity(refs[0])
        for ref, key in zip(refs, keys):  # in manifest order: a recipe's NAME_00, NAME_01, ...
            dtype = str(ref.entry.get("dtype"))
            if first is None:
                first = (source, ident, dtype)
            elif dtype != first[2]:
                raise InputError(f"merge: {ref.prefix} holds {dtype} tokens but {first[0]} holds {first[2]}",
                                 hint="merge only datasets made with the same tokenizer (same token dtype)")
            elif ident != first[1]:
                diff = {k: v for k, v in ident.items() if first[1].get(k) != v}
                raise InputError(
                    f"merge: {source} was tokenized with another tokenizer than {first[0]} "
                    f"({_describe(diff)} vs {_describe({k: first[1].get(k) for k in diff})})",
                    hint="merge only datasets made with the same tokenizer files",
                )
            groups.setdefault(key, []).append(ref)
    return groups


def _key_of(prefix_name: str) -> str:
    """``NAME_text_document`` → ``text`` (for manifests without ``json_key``)."""
    stem = prefix_name.removesuffix("_document")
    return stem.rsplit("_", 1)[-1] if "_" in stem else "text"


def merge_datasets(cfg: MergeConfig, *, progress: bool = False) -> Manifest:
    """Merge the inputs' pairs into ``cfg.output_prefix``'s artifact; returns its manifest (written last).

    ``progress`` shows a tqdm bar (bytes copied, rate, ETA) on stderr when it is a terminal.
    """
    start = time.perf_counter()
    groups = collect_inputs(cfg.input)
    prefix = Path(cfg.output_prefix)
    artifact_dir = prefix.parent
    names = {key: dataset_prefix_name(prefix.name, key) for key in groups}
    out_prefixes = {artifact_dir / n for n in names.values()}
    for refs in groups.values():
        for ref in refs:
            if ref.prefix in out_prefixes:
                raise ConfigError(f"merge: the output {ref.prefix} is also an input",
                                  hint="write the merged dataset to another --output-prefix")
    check_artifact_dir(artifact_dir, list(names.values()))
    artifact_dir.mkdir(parents=True, exist_ok=True)
    remove_manifest(artifact_dir)
    mode = file_mode()
    datasets, hashes = [], {}
    total = sum(Path(f"{r.prefix}.bin").stat().st_size for refs in groups.values() for r in refs)
    try:
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc="merging",
                                           file=sys.stderr, disable=None if progress else True, dynamic_ncols=True))
            for key, refs in groups.items():
                name = names[key]
                entry, digest = _merge_pair(stack, refs, artifact_dir / name, mode, bar.update)
                datasets.append({"prefix": name, "json_key": key, **entry})
                hashes[f"{name}.bin"] = digest
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise BigNLPError(f"no space left on device merging into {artifact_dir}: "
                          f"{shutil.disk_usage(artifact_dir).free / 1e6:,.1f} MB free; the partial files were removed",
                          hint="free space or choose another --output-prefix directory") from None
    first = next(iter(groups.values()))[0]
    tok_files = copy_files({key: (str(first.tokenizer[key]), source) for key in TOKENIZER_FILE_KEYS
                            if (source := first.tokenizer_file(key)) is not None}, artifact_dir)
    save_config(cfg, artifact_dir / CONFIG_NAME)
    os.chmod(artifact_dir / CONFIG_NAME, mode)
    manifests = {str(r.artifact_dir.resolve()): r.manifest for refs in groups.values() for r in refs}
    summary = {
        "datasets": datasets,
        "tokenizer": {**first.tokenizer, **tok_files},
        "num_documents": datasets[0]["num_documents"],
        "num_tokens": sum(d["num_tokens"] for d in datasets),
        "input_bytes": sum(int(m.summary.get("input_bytes", 0)) for m in manifests.values()),
        "skipped": {r: sum(int(m.summary.get("skipped", {}).get(r, 0)) for m in manifests.values())
                    for r in SKIP_REASONS},
        # true only when every input was split into sentences
        "split_sentences": all(bool(m.summary.get("split_sentences")) for m in manifests.values()),
        "merged_from": [str(r.prefix.resolve()) for refs in groups.values() for r in refs],
        "elapsed_s": round(time.perf_counter() - start, 3),
    }
    manifest = write_manifest(
        artifact_dir, MEGATRON_DATASET, producer=producer(),
        files=[*hashes, *(f"{n}.idx" for n in names.values()), *tok_files.values(), CONFIG_NAME],
        config=to_dict(cfg), inputs=[input_record(d) for d in manifests], summary=summary, hashes=hashes,
    )
    os.chmod(artifact_dir / MANIFEST_NAME, mode)
    return manifest


def _merge_pair(stack: contextlib.ExitStack, refs: list[DatasetRef], out: Path, mode: int,
                advance: Callable[[int], object] = lambda _n: None) -> tuple[dict, str]:
    """Write ``out.bin``/``out.idx`` (temporaries renamed when ``stack`` closes); the summary entry and bin sha256."""
    readers = []
    for ref in refs:
        try:
            readers.append(IndexedDatasetReader.open(ref.prefix))
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
    dtype = readers[0].dtype
    sha = hashlib.sha256()
    bin_file = _open_output(stack, Path(f"{out}.bin"), mode)
    for reader in readers:
        with open(f"{reader.prefix}.bin", "rb") as src:
            while chunk := src.read(COPY_CHUNK):
                bin_file.write(chunk)
                sha.update(chunk)
                advance(len(chunk))
    lengths = np.concatenate([r.sequence_lengths for r in readers]).astype("<i4")
    doc_index = [np.zeros(1, "<i8")]
    offset = 0
    for r in readers:
        doc_index.append(r.document_indices[1:].astype("<i8") + offset)
        offset += len(r.sequence_lengths)
    docs = np.concatenate(doc_index)
    write_index(_open_output(stack, Path(f"{out}.idx"), mode), dtype, lengths, docs)
    entry = {"num_documents": len(docs) - 1, "num_sequences": len(lengths), "num_tokens": int(lengths.sum()),
             "dtype": dtype.newbyteorder("=").name}
    return entry, sha.hexdigest()
