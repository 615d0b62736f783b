"""Checkpoints to convert, made here: random models of each family with the real tokenizers the repo ships.

``make_checkpoint(dir, kind)`` writes a weights-only model checkpoint through
``bignlp_models.save_model_checkpoint`` (what every converter reads; training checkpoints hold the
same ``model.*`` entries plus optimizer state, covered by the end-to-end tests in tests/).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bignlp_contracts import Producer
from bignlp_models import GPT_SPEC, T5_SPEC, GPTConfig, T5Config, padded_vocab_size, save_model_checkpoint
from bignlp_tokenizers import TokenizerSpec, build_tokenizer

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
PRODUCER = Producer("bignlp-convert-tests", "0")


def tokenizer(kind: str):
    """gpt: GPT-2 BPE; t5: uncased BERT WordPiece + 100 sentinels; mt5: the multilingual SentencePiece + 100."""
    if kind == "gpt":
        return build_tokenizer(TokenizerSpec("gpt2-bpe", vocab_file=str(DATA / "gpt2" / "vocab.json"),
                                             merges_file=str(DATA / "gpt2" / "merges.txt")))
    if kind == "t5":
        return build_tokenizer(TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(DATA / "bert" / "vocab.txt"),
                                             num_sentinel_tokens=100))
    model = DATA / "spm" / "multi_unigram_8000.model"
    return build_tokenizer(TokenizerSpec("sentencepiece", tokenizer_model=str(model), num_sentinel_tokens=100))


def config(kind: str, vocab_size: int, **overrides):
    """A small config of ``kind``: gpt; t5 (the NeMo launcher's options); t5v11 / mt5 (relative bias, RMSNorm,
    no bias, geglu, untied head: what Hugging Face's T5 v1.1 / mT5 compute)."""
    padded = padded_vocab_size(vocab_size, 128)
    if kind == "gpt":
        cfg = GPTConfig(vocab_size=padded, max_position_embeddings=64, num_layers=3, hidden_size=64,
                        num_attention_heads=4, kv_channels=16, ffn_hidden_size=256)
    else:
        cfg = T5Config(vocab_size=padded, hidden_size=64, num_attention_heads=4, kv_channels=16, encoder_num_layers=2,
                       decoder_num_layers=2, encoder_ffn_hidden_size=96, decoder_ffn_hidden_size=96,
                       max_position_embeddings=64)
        if kind in ("t5v11", "mt5"):
            cfg = dataclasses.replace(cfg, position_embedding_type="relative", normalization="rmsnorm", bias=False,
                                      activation="geglu", share_decoder_tokens_head_embeddings=False,
                                      layernorm_epsilon=1e-6)
    return dataclasses.replace(cfg, **overrides)


def make_checkpoint(out: Path, kind: str, *, seed: int = 0, **overrides):
    """A checkpoint of a random ``kind`` model (gpt, t5, t5v11, mt5) at ``out``; returns (path, model, tokenizer).

    Weights are drawn with std 0.2 (not the tiny init) so logits differ clearly between tokens.
    """
    tok = tokenizer("gpt" if kind == "gpt" else "mt5" if kind == "mt5" else "t5")
    cfg = config(kind, tok.vocab_size, **overrides)
    spec = GPT_SPEC if kind == "gpt" else T5_SPEC
    torch.manual_seed(seed)
    model = spec.model_class(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    model.eval()
    save_model_checkpoint(out, family=spec, config=cfg, state_dict=model.state_dict(), tokenizer=tok,
                          producer=PRODUCER)
    return out, model, tok
