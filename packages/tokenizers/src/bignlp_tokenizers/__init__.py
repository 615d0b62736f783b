"""bignlp-tokenizers: the tokenizer an artifact carries, one implementation for every stage.

Dataprep tokenizes with it and records it in a dataset's manifest (``summary.tokenizer`` plus the
files under ``tokenizer/``); train copies that into every checkpoint; fine-tuning, evaluation and
serving rebuild the very same tokenizer with :func:`tokenizer_from_summary`. Types: GPT-2 BPE
(tiktoken), BERT WordPiece and any ``tokenizer.json`` (Hugging Face ``tokenizers``), SentencePiece.
Every one is a :class:`Tokenizer`: ``encode``/``encode_batch``/``decode``, ``vocab_size``, the
special-token ids by role (``eod_id``, ``pad_id``, ...), and T5 sentinels appended after the vocabulary.
No torch.
"""

from .base import ROLES, Tokenizer, require_file, sentinel_tokens
from .gpt2 import GPT2BPETokenizer
from .hf import HuggingFaceTokenizer
from .sentencepiece import SentencePieceTokenizer
from .spec import (
    TOKENIZER_FILE_KEYS,
    TOKENIZER_TYPES,
    TokenizerSpec,
    build_tokenizer,
    canonical_tokenizer_type,
    tokenizer_from_summary,
)
from .wordpiece import BertWordPieceTokenizer

__version__ = "0.1.0"

__all__ = [
    "ROLES", "TOKENIZER_FILE_KEYS", "TOKENIZER_TYPES",
    "BertWordPieceTokenizer", "GPT2BPETokenizer", "HuggingFaceTokenizer", "SentencePieceTokenizer",
    "Tokenizer", "TokenizerSpec",
    "build_tokenizer", "canonical_tokenizer_type", "require_file", "sentinel_tokens", "tokenizer_from_summary",
]
