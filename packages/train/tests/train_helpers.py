"""Test helpers: tiny megatron-dataset artifacts built here (stages never import each other)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from bignlp_contracts import MEGATRON_DATASET, Producer, write_manifest

with warnings.catch_warnings():  # megatron-core warns at import that Apex/TE are absent
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder


def make_dataset(
    out_dir: Path,
    *,
    name: str = "toy",
    num_docs: int = 200,
    vocab_size: int = 512,
    seed: int = 0,
    tokenizer_type: str = "gpt2-bpe",
) -> Path:
    """Write ``out_dir/{name}_text_document.bin/.idx`` + tokenizer/ + manifest; return the prefix.

    Documents are Zipf-distributed tokens with a repeating motif, so a tiny model's
    loss drops within a few steps; the last id is the end-of-document token.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    eod = vocab_size - 1
    prefix = out_dir / f"{name}_text_document"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    num_tokens = 0
    for _ in range(num_docs):
        length = int(rng.integers(20, 60))
        doc = np.minimum(rng.zipf(1.3, size=length), eod - 1)
        doc[::4] = np.arange(len(doc[::4])) % 8 + 1  # a motif the model can pick up
        ids = [*doc.tolist(), eod]
        builder.add_document(ids, [len(ids)])
        num_tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    tok_dir = out_dir / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps({f"t{i}": i for i in range(vocab_size)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    write_manifest(
        out_dir,
        MEGATRON_DATASET,
        producer=Producer("bignlp-train-tests", "0"),
        files=[f"{name}_text_document.bin", f"{name}_text_document.idx", "tokenizer/vocab.json",
               "tokenizer/merges.txt"],
        summary={
            "datasets": [{"prefix": f"{name}_text_document", "json_key": "text", "num_documents": num_docs,
                          "num_sequences": num_docs, "num_tokens": num_tokens, "dtype": "uint16"}],
            "tokenizer": {"type": tokenizer_type, "vocab_file": "tokenizer/vocab.json",
                          "merge_file": "tokenizer/merges.txt", "vocab_size": vocab_size, "eod_id": eod},
        },
    )
    return prefix


def tiny_overrides(data_prefix, run_dir: Path, *extra: str) -> list[str]:
    """Shrink the shipped gpt3/tiny-cpu config to a model that steps in milliseconds."""
    prefix = data_prefix if isinstance(data_prefix, str) else f"[1.0,{data_prefix}]"
    return [
        f"model.data.data_prefix={prefix}",
        f"exp_manager.explicit_log_dir={run_dir}",
        "trainer.accelerator=cpu",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1",
        "model.micro_batch_size=2",
        "model.global_batch_size=4",
        "model.encoder_seq_length=16",
        "model.max_position_embeddings=16",
        "model.data.seq_length=16",
        "model.num_layers=2",
        "model.hidden_size=32",
        "model.ffn_hidden_size=64",
        "model.num_attention_heads=2",
        "model.optim.lr=5e-3",
        "model.optim.sched.warmup_steps=1",
        "model.optim.sched.min_lr=5e-4",
        "model.data.splits_string=80,15,5",
        *extra,
    ]


def make_t5_dataset(out_dir: Path, *, name: str = "t5toy", num_docs: int = 200, num_words: int = 300,
                    num_sentinel_tokens: int = 100, seed: int = 0) -> Path:
    """A span-corruption dataset: a synthetic BERT WordPiece vocabulary (words and ``##`` continuations)
    with T5 sentinels appended, as ``bignlp-dataprep preprocess --num-sentinel-tokens`` makes; return the prefix.

    Each document is one sentence of Zipf-distributed words with a repeating motif (so a tiny model
    learns within a few steps), some words continued by a ``##`` piece (whole-word masking keeps them).
    """
    from bignlp_tokenizers import TokenizerSpec, build_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = out_dir / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(num_words)]
    pieces = [f"##p{i}" for i in range(20)]
    (tok_dir / "vocab.txt").write_text("\n".join(specials + words + pieces) + "\n")
    tokenizer = build_tokenizer(TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(tok_dir / "vocab.txt"),
                                              num_sentinel_tokens=num_sentinel_tokens))
    first_word, first_piece = len(specials), len(specials) + num_words
    rng = np.random.default_rng(seed)
    prefix = out_dir / f"{name}_text_document"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    num_tokens = 0
    for _ in range(num_docs):
        length = int(rng.integers(40, 90))
        doc = first_word + np.minimum(rng.zipf(1.3, size=length), num_words - 1)
        doc[::3] = first_word + np.arange(len(doc[::3])) % 8  # a motif the model can pick up
        ids = []
        for word in doc.tolist():
            ids.append(word)
            if rng.random() < 0.15:
                ids.append(first_piece + int(rng.integers(0, len(pieces))))
        builder.add_document(ids, [len(ids)])
        num_tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    summary = {**tokenizer.summary(), "vocab_file": "tokenizer/vocab.txt"}
    write_manifest(
        out_dir,
        MEGATRON_DATASET,
        producer=Producer("bignlp-train-tests", "0"),
        files=[f"{name}_text_document.bin", f"{name}_text_document.idx", "tokenizer/vocab.txt"],
        summary={
            "datasets": [{"prefix": f"{name}_text_document", "json_key": "text", "num_documents": num_docs,
                          "num_sequences": num_docs, "num_tokens": num_tokens, "dtype": "uint16"}],
            "tokenizer": summary,
        },
    )
    return prefix


def t5_tiny_overrides(data_prefix, run_dir: Path, *extra: str) -> list[str]:
    """Shrink the shipped t5/tiny-cpu config to a model that steps in milliseconds."""
    prefix = data_prefix if isinstance(data_prefix, str) else f"[1.0,{data_prefix}]"
    return [
        f"model.data.data_prefix={prefix}",
        f"exp_manager.explicit_log_dir={run_dir}",
        "trainer.accelerator=cpu",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1",
        "model.micro_batch_size=2",
        "model.global_batch_size=4",
        "model.seq_length=32",
        "model.max_position_embeddings=32",
        "model.data.seq_length_dec=16",
        "model.num_layers=2",
        "model.hidden_size=32",
        "model.ffn_hidden_size=64",
        "model.num_attention_heads=2",
        "model.kv_channels=16",
        "model.optim.lr=5e-3",
        "model.optim.sched.warmup_ratio=0.2",
        "model.optim.sched.min_lr=5e-4",
        "model.data.splits_string=80,15,5",
        *extra,
    ]


REPO_DATA = Path(__file__).resolve().parents[3] / "tests" / "data"


def make_spm_t5_dataset(out_dir: Path, *, name: str = "multi", num_docs: int | None = None,
                        corpus: Path = REPO_DATA / "corpus" / "demo-multi.jsonl.gz",
                        model: Path = REPO_DATA / "spm" / "multi_unigram_8000.model") -> Path:
    """An mT5 span-corruption dataset: the shipped multilingual slice, tokenized with the shipped SentencePiece
    model and 100 sentinels (what ``bignlp-dataprep preprocess --num-sentinel-tokens 100`` makes); the prefix."""
    import gzip
    import shutil

    from bignlp_tokenizers import TokenizerSpec, build_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer").mkdir(exist_ok=True)
    shutil.copy(model, out_dir / "tokenizer" / model.name)
    tokenizer = build_tokenizer(TokenizerSpec("sentencepiece", tokenizer_model=str(model), num_sentinel_tokens=100))
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    docs = docs[:num_docs] if num_docs else docs
    prefix = out_dir / f"{name}_text_document"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    num_tokens = 0
    num_sequences = 0
    for text in docs:
        # one sequence per sentence (Megatron's --split-sentences): samples pack sentences up to seq_length
        pieces = [tokenizer.encode(t) for t in re.split(r"(?<=[.!?\u3002\uff01\uff1f])\s*|\n+", text) if t.strip()]
        pieces = [p for p in pieces if p]
        builder.add_document([i for p in pieces for i in p], [len(p) for p in pieces])
        num_tokens += sum(len(p) for p in pieces)
        num_sequences += len(pieces)
    builder.finalize(f"{prefix}.idx")
    write_manifest(
        out_dir,
        MEGATRON_DATASET,
        producer=Producer("bignlp-train-tests", "0"),
        files=[f"{name}_text_document.bin", f"{name}_text_document.idx", f"tokenizer/{model.name}"],
        summary={
            "datasets": [{"prefix": f"{name}_text_document", "json_key": "text", "num_documents": len(docs),
                          "num_sequences": num_sequences, "num_tokens": num_tokens, "dtype": "uint16"}],
            "tokenizer": {**tokenizer.summary(), "tokenizer_model": f"tokenizer/{model.name}"},
        },
    )
    return prefix
