"""Look inside a finished dataset artifact: counts from the index, documents detokenized."""

from __future__ import annotations

import os
from typing import Any

from bignlp_contracts import ArtifactError, resolve_dataset

from .indexed import IndexedDatasetReader
from .tokenizers import TokenizerSpec, build_tokenizer


def inspect_dataset(path: str | os.PathLike, *, num_show: int = 0) -> dict[str, Any]:
    """Validate the artifact at ``path`` (a directory or one prefix in it) and describe it.

    Counts come from the ``.idx`` files themselves and must agree with the
    manifest; ``num_show`` > 0 also decodes the first documents of each dataset.
    """
    refs = resolve_dataset(path, verify="sha256")
    tok = refs[0].tokenizer
    tokenizer = None
    if num_show:
        files = {k: str(refs[0].tokenizer_file(k) or "") or None
                 for k in ("vocab_file", "merges_file", "tokenizer_model", "tokenizer_file")}
        spec = TokenizerSpec(tok["type"], **files, eod_token=(refs[0].manifest.config or {}).get("eod_token"))
        tokenizer = build_tokenizer(spec)
    datasets = []
    for ref in refs:
        try:
            reader = IndexedDatasetReader.open(ref.prefix)
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
        entry = {
            "prefix": ref.prefix.name,
            "num_documents": reader.num_documents,
            "num_sequences": len(reader.sequence_lengths),
            "num_tokens": int(reader.sequence_lengths.sum()),
            "dtype": reader.dtype.name,
        }
        for key, value in entry.items():
            if key != "prefix" and ref.entry.get(key) != value:
                raise ArtifactError(f"{ref.prefix}: index says {key}={value}, the manifest {ref.entry.get(key)}")
        shown = []
        if tokenizer is not None:
            for i in range(min(num_show, reader.num_documents)):
                shown.append(tokenizer.decode(reader.document(i).tolist()))
        datasets.append({**entry, "shown": shown})
    return {"artifact_dir": str(refs[0].artifact_dir), "tokenizer": tok, "datasets": datasets}
