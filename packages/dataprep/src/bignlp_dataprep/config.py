"""The preprocessing config: one frozen dataclass, loadable from YAML with overrides.

Field names are Megatron-LM's ``tools/preprocess_data.py`` option names with
underscores, so ``--json-keys`` on the command line is ``json_keys`` in a YAML
file or a ``json_keys=[text,title]`` override.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bignlp_contracts import apply_overrides, load_config, load_yaml
from bignlp_tokenizers import TokenizerSpec, canonical_tokenizer_type

_LIST_FIELDS = ("input", "json_keys")
ON_ERROR = ("fail", "skip")


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """What ``bignlp-dataprep preprocess`` does; saved as ``config.yaml`` in the artifact."""

    # JSONL files (.jsonl, .json, optionally .gz or .zst), one JSON object per line, read in order.
    input: tuple[str, ...] = ()
    # DIR/NAME: writes DIR/NAME_<key>_document.bin/.idx; DIR is the artifact directory.
    output_prefix: str = ""
    # One dataset per key; a list value is a list of sentences (Megatron's --split-sentences output).
    json_keys: tuple[str, ...] = ("text",)
    # gpt2-bpe, bert-wordpiece(-lowercase), bert-wordpiece-case, sentencepiece, huggingface, or Megatron's
    # names (GPT2BPETokenizer, BertWordPieceLowerCase, BertWordPieceCase, SentencePieceTokenizer); stored canonical.
    tokenizer_type: str = "gpt2-bpe"
    vocab_file: str | None = None  # gpt2-bpe: vocab.json; bert-wordpiece: vocab.txt
    merges_file: str | None = None  # gpt2-bpe only
    tokenizer_model: str | None = None  # sentencepiece: the .model file
    tokenizer_file: str | None = None  # huggingface: tokenizer.json
    # huggingface: the end-of-document token; default <|endoftext|>, else </s>.
    eod_token: str | None = None
    # T5/mT5: append the sentinels <extra_id_0> ... after the vocabulary (NeMo's tokenizer.num_sentinel_tokens;
    # 100 for T5). Document ids do not change (sentinel text in a document stays ordinary text); vocab_size and
    # the manifest's summary.tokenizer count them, so training finds them there.
    num_sentinel_tokens: int = 0
    # fail: stop at the first bad line (naming FILE:LINE). skip: drop malformed JSON, missing keys, invalid
    # UTF-8 and empty documents, counted per reason in the manifest's summary.skipped.
    on_error: str = "fail"
    # T5/BERT: cut every string into sentences (sentences.py, rule-based; Megatron's --split-sentences without
    # NLTK), one sequence each, sequences over 512 tokens cut (megatron-core skips documents holding one).
    split_sentences: bool = False
    # End every non-empty document with the EOD token, so GPT samples that span documents see a boundary.
    append_eod: bool = False
    # Tokenizing processes; 1 tokenizes in this process. The output is identical for any value;
    # fewer are started for an input of under 4 batches per worker (see preprocess.plan_workers).
    workers: int = 1
    # Uncompressed JSONL per worker task: big enough to amortize inter-process traffic, small enough to balance.
    batch_mb: float = 1.0

    def __post_init__(self) -> None:
        if not self.input:
            raise ValueError("input: no input files (give --input FILE [FILE...] or input: [...] in the config)")
        if not self.output_prefix:
            raise ValueError("output_prefix: missing (give --output-prefix DIR/NAME)")
        if self.output_prefix.endswith(("/", os.sep)) or os.path.isdir(self.output_prefix):
            raise ValueError(f"output_prefix {self.output_prefix!r} is a directory; give DIR/NAME (a file name prefix)")
        if not self.json_keys:
            raise ValueError("json_keys: give at least one key")
        if dupes := sorted({k for k in self.json_keys if self.json_keys.count(k) > 1}):
            raise ValueError(f"json_keys: {', '.join(dupes)} given more than once")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.batch_mb > 0:
            raise ValueError(f"batch_mb must be > 0, got {self.batch_mb}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        if self.num_sentinel_tokens < 0:
            raise ValueError(f"num_sentinel_tokens must be >= 0, got {self.num_sentinel_tokens}")
        object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(self.tokenizer_type))

    @property
    def tokenizer(self) -> TokenizerSpec:
        """The tokenizer part: its type, files and appended sentinels."""
        return TokenizerSpec(self.tokenizer_type, self.vocab_file, self.merges_file, self.tokenizer_model,
                             self.tokenizer_file, self.eod_token, num_sentinel_tokens=self.num_sentinel_tokens)


def load_preprocess_config(
    config_file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> PreprocessConfig:
    """YAML file (optional), then ``key=value`` overrides, then explicit flags (None = not given).

    A single string where a list is expected (``input=a.jsonl``) is taken as a one-item list.
    """
    data = load_yaml(config_file) if config_file is not None else {}
    data = apply_overrides(data, overrides)
    data.update({k: v for k, v in (flags or {}).items() if v is not None and v != ()})
    for key in _LIST_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    return load_config(PreprocessConfig, data)
