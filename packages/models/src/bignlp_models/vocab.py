"""Vocabulary padding, as Megatron pads the embedding and the logits."""

from __future__ import annotations


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel_size: int = 1) -> int:
    """Megatron's padding: round the tokenizer's vocabulary up to a multiple of divisible_by × TP.

    Faster matmuls, and every tensor-parallel rank gets an equal slice (50257 → 50304).
    """
    multiple = divisible_by * tensor_parallel_size
    return ((vocab_size + multiple - 1) // multiple) * multiple
