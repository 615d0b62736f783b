"""Base config generation: a ``bignlp-train`` YAML for a GPT-3, T5 or mT5 of any size.

GPT-3: the launcher's tables (hidden, heads, learning rate by size; layers solved so the
parameter count is the size; GBS/TP/PP by size). T5/mT5: the FACTS have no launcher table, so
the rows are derived from the shipped ``t5/*`` and ``mt5/*`` training configs (the launcher's
own shapes) and, between them, interpolated (marked ``derived``). Rows below 0.05B are ours, for
CPU tests. 40 GB GPUs: the 80 GB layout with TP doubled (up to 8), then PP doubled (derived).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bignlp_contracts import ConfigError
from bignlp_models.gpt import GPTConfig
from bignlp_models.spec import get_family
from bignlp_models.t5 import T5Config

# (size bound in B, hidden, heads, lr) — FACTS "The launcher's HP tool"; the first row is ours
GPT_SHAPES = [(0.05, 128, 4, 2e-3), (0.25, 768, 12, 6e-4), (0.5, 1024, 16, 3e-4), (1, 1536, 16, 2.5e-4),
              (2, 2048, 16, 2e-4), (3, 2560, 32, 1.6e-4), (4.5, 3072, 32, 1.4e-4), (8, 4096, 32, 1.2e-4),
              (15, 5120, 40, 1e-4), (25, 6144, 48, 1e-4), (52, 8192, 64, 8e-5), (105, 10240, 80, 7e-5),
              (205, 12288, 96, 6e-5)]
# (size bound in B, GBS, TP, PP) for 80 GB GPUs; the first row is ours
GPT_LAYOUTS = [(0.05, 8, 1, 1), (1, 256, 1, 1), (4, 1024, 1, 1), (8, 2048, 2, 1), (13, 2048, 4, 1),
               (20.6, 2048, 8, 1), (45.6, 2048, 8, 2), (123.6, 2048, 8, 4), (205, 2048, 8, 8)]
# (size bound in B, hidden, ffn, heads, kv_channels) from the shipped configs; "derived" rows interpolate
T5_SHAPES = {
    "t5": [(0.05, 128, 256, 4, 32), (0.5, 768, 2048, 12, 64), (1.5, 1024, 2816, 16, 64),  # 1.5: derived
           (6, 2048, 5120, 32, 64), (16, 4096, 10240, 64, 64), (30, 5120, 10880, 80, 64), (60, 6144, 10880, 96, 64)],
    "mt5": [(0.05, 128, 256, 4, 32), (0.25, 512, 1024, 6, 64), (0.7, 768, 2048, 12, 64),
            (1.5, 1024, 2816, 16, 64), (6, 2048, 5120, 32, 64), (16, 4096, 10240, 64, 64),  # 1.5: derived
            (30, 5120, 10880, 80, 64), (60, 6144, 10880, 96, 64)],
}
# (size bound in B, GBS, TP, PP, MBS) for 80 GB GPUs, from the shipped t5/mt5 configs; the first row is ours
T5_LAYOUTS = {
    "t5": [(0.05, 16, 1, 1, 8), (1.5, 2048, 1, 1, 64), (6, 1920, 2, 1, 24), (16, 1920, 4, 1, 12),
           (30, 1920, 4, 2, 4), (60, 1920, 4, 4, 4)],
    "mt5": [(0.05, 16, 1, 1, 8), (0.25, 2048, 1, 1, 64), (1.5, 2048, 1, 1, 32), (6, 1920, 2, 1, 24),
            (16, 1920, 4, 1, 8), (30, 1920, 4, 2, 4), (60, 1920, 4, 4, 4)],
}
DEFAULT_SEQ = {"gpt": 2048, "t5": 512}
VOCAB_MULTIPLE = 128


@dataclass(frozen=True)
class ModelShape:
    """What the performance model reads: the family's architecture, sequence lengths, counts."""

    family: str  # gpt or t5
    arch: object  # GPTConfig or T5Config
    seq_length: int
    seq_length_dec: int | None
    num_parameters: int

    @property
    def spec(self):
        """The bignlp-models family spec."""
        return get_family(self.family)

    @property
    def hidden_size(self) -> int:
        return self.arch.hidden_size

    @property
    def num_attention_heads(self) -> int:
        return self.arch.num_attention_heads

    @property
    def num_layers(self) -> int:
        """Transformer layers in all (encoder + decoder for T5)."""
        a = self.arch
        return a.num_layers if self.family == "gpt" else a.encoder_num_layers + a.decoder_num_layers

    @property
    def ffn_hidden_size(self) -> int:
        return self.arch.ffn_hidden_size if self.family == "gpt" else self.arch.encoder_ffn_hidden_size

    def flops_per_token(self) -> float:
        """Model FLOPs per trained token (encoder token for T5), the family spec's formula."""
        if self.family == "gpt":
            return self.spec.flops_per_token(self.arch, self.seq_length)
        return self.spec.flops_per_token(self.arch, self.seq_length, self.seq_length_dec)


def pad_vocab(vocab_size: int, tp: int = 1) -> int:
    """Embedding rows as bignlp-train pads them: a multiple of 128 × TP."""
    m = VOCAB_MULTIPLE * tp
    return int(math.ceil(vocab_size / m) * m)


def seq_lengths(family: str, seq_length: int | None) -> tuple[int, int | None]:
    """(encoder or GPT length, T5 decoder length): 2048 / 512+128 by default; T5's decoder is s/4, at least 40."""
    s = seq_length or DEFAULT_SEQ[family]
    return s, (max(s // 4, 40) if family == "t5" else None)


def _row(table, size: float, what: str):
    for row in table:
        if size < row[0] or (size == row[0] and row is table[-1]):
            return row
    raise ConfigError(f"no {what} for {size:g}B parameters: the tables cover up to {table[-1][0]:g}B",
                      hint="choose a smaller train_settings.model_size_in_b")


def gpt_shape(size_in_b: float, vocab_size: int, seq_length: int, pp: int = 1) -> ModelShape:
    """GPT-3 shape for a size: the table's hidden/heads, layers solved for the parameter count (multiple of PP)."""
    _, h, heads, _ = _row(GPT_SHAPES, size_in_b, "GPT-3 shape")
    v = pad_vocab(vocab_size)
    target = size_in_b * 1e9

    def params(layers: int) -> int:
        return get_family("gpt").count_parameters(_gpt_arch(layers, h, heads, v, seq_length))

    per_layer = params(2) - params(1)
    layers = max(1, round((target - params(0)) / per_layer))
    layers = max(pp, round(layers / pp) * pp)
    arch = _gpt_arch(layers, h, heads, v, seq_length)
    return ModelShape("gpt", arch, seq_length, None, params(layers))


def _gpt_arch(layers: int, h: int, heads: int, vocab: int, seq: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab, max_position_embeddings=seq, num_layers=layers, hidden_size=h,
                     num_attention_heads=heads, ffn_hidden_size=4 * h, kv_channels=h // heads)


def t5_shape(model_type: str, size_in_b: float, vocab_size: int, seq_length: int, seq_length_dec: int,
             pp: int = 1) -> ModelShape:
    """T5/mT5 shape for a size: the row's widths, layers per stack solved for the count (half of PP divides them)."""
    _, h, f, heads, kv = _row(T5_SHAPES[model_type], size_in_b, f"{model_type} shape")
    v = pad_vocab(vocab_size + 100)  # + the 100 sentinels

    def params(layers: int) -> int:
        return get_family("t5").count_parameters(_t5_arch(layers, h, f, heads, kv, v, seq_length))

    per_layer = params(2) - params(1)
    step = max(1, pp // 2)
    layers = max(1, round((size_in_b * 1e9 - params(0)) / per_layer))
    layers = max(step, round(layers / step) * step)
    return ModelShape("t5", _t5_arch(layers, h, f, heads, kv, v, seq_length), seq_length, seq_length_dec,
                      params(layers))


def _t5_arch(layers: int, h: int, f: int, heads: int, kv: int, vocab: int, seq: int) -> T5Config:
    return T5Config(vocab_size=vocab, hidden_size=h, num_attention_heads=heads, kv_channels=kv,
                    encoder_num_layers=layers, decoder_num_layers=layers, encoder_ffn_hidden_size=f,
                    decoder_ffn_hidden_size=f, max_position_embeddings=seq)


def default_layout(model_type: str, size_in_b: float, gpu_memory_gb: float) -> dict:
    """GBS, TP, PP, MBS of the base config (80 GB table; under 80 GB TP, then PP, doubled: derived)."""
    if model_type == "gpt3":
        _, gbs, tp, pp = _row(GPT_LAYOUTS, size_in_b, "GPT-3 layout")
        mbs = 4 if size_in_b <= 1 else 2 if size_in_b <= 8 else 1
    else:
        _, gbs, tp, pp, mbs = _row(T5_LAYOUTS[model_type], size_in_b, f"{model_type} layout")
    if gpu_memory_gb < 80 and size_in_b >= 0.05:
        if tp < 8:
            tp *= 2
        else:
            pp *= 2
    return {"gbs": gbs, "tp": tp, "pp": pp, "mbs": mbs}


def model_shape(model_type: str, size_in_b: float, vocab_size: int, seq_length: int | None = None,
                pp: int = 1) -> ModelShape:
    """The architecture the base config gives a size (for the performance model and the base config)."""
    family = "gpt" if model_type == "gpt3" else "t5"
    s, s_dec = seq_lengths(family, seq_length)
    if family == "gpt":
        return gpt_shape(size_in_b, vocab_size, s, pp)
    return t5_shape(model_type, size_in_b, vocab_size, s, s_dec, pp)


def learning_rate(model_type: str, size_in_b: float) -> float:
    """Peak learning rate: the GPT-3 table's; T5/mT5 recipes' 1e-4 (1e-3 for our tiny row)."""
    if model_type == "gpt3":
        return _row(GPT_SHAPES, size_in_b, "GPT-3 shape")[3]
    return 1e-3 if size_in_b < 0.05 else 1e-4
