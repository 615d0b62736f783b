"""A small random GPT (and T5) checkpoint with the GPT-2 tokenizer the repo ships, and the task files' place.

``make_checkpoint`` writes a weights-only model checkpoint through ``bignlp_models.save_model_checkpoint``
(what ``load_model`` reads from a training checkpoint too). 64 positions, so wikitext documents span
several rolling windows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bignlp_contracts import Producer
from bignlp_models import GPT_SPEC, T5_SPEC, GPTConfig, T5Config, padded_vocab_size, save_model_checkpoint
from bignlp_tokenizers import TokenizerSpec, build_tokenizer

REPO_DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
TASK_DATA = Path(__file__).resolve().parent / "data"
PRODUCER = Producer("bignlp-evaluate-tests", "0")


def gpt2_tokenizer():
    return build_tokenizer(TokenizerSpec("gpt2-bpe", vocab_file=str(REPO_DATA / "gpt2" / "vocab.json"),
                                         merges_file=str(REPO_DATA / "gpt2" / "merges.txt")))


def make_checkpoint(out: Path, kind: str = "gpt", *, seed: int = 0) -> Path:
    """A checkpoint of a random ``kind`` (gpt or t5) model at ``out``; weights std 0.2 so choices differ clearly."""
    tok = gpt2_tokenizer()
    padded = padded_vocab_size(tok.vocab_size, 128)
    if kind == "gpt":
        spec, cfg = GPT_SPEC, GPTConfig(vocab_size=padded, max_position_embeddings=64, num_layers=2, hidden_size=32,
                                        num_attention_heads=4, kv_channels=8, ffn_hidden_size=64)
    else:
        spec, cfg = T5_SPEC, T5Config(vocab_size=padded, hidden_size=32, num_attention_heads=4, kv_channels=8,
                                      encoder_num_layers=1, decoder_num_layers=1, encoder_ffn_hidden_size=64,
                                      decoder_ffn_hidden_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    model = spec.model_class(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    save_model_checkpoint(out, family=spec, config=cfg, state_dict=model.state_dict(), tokenizer=tok,
                          producer=PRODUCER)
    return out
