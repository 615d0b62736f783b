"""How ``generate`` runs each kind of model: one small adapter per family, named by its ``FamilySpec``.

``generate`` owns the loop (sampling, stop tokens, streaming); an adapter owns what differs
between a decoder-only and an encoder-decoder model: how the prompts are batched and checked
against the model's positions, the first forward (which fills the ``KVCache``), and a step
(one new token per row through the cache).

- ``DecoderOnly`` (GPT): prompts left-padded, so every row's next token sits in the same column;
  one prefill over the prompts, then one token a step.
- ``EncoderDecoder`` (T5): prompts are the encoder's inputs, right-padded (learned absolute
  positions count from the first column) with a padding mask; the encoder runs once, the decoder
  starts from ``decoder_start_token_id`` and takes one token a step, its self-attention keys and
  values and each layer's cross-attention keys and values (of the encoder output, computed on the
  first step) in the cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bignlp_contracts import InputError

from .layers import KVCache


class PromptError(InputError, ValueError):
    """A prompt the model cannot take: empty, too long for its positions, or a token outside the vocabulary."""


class Decoding:
    """One generation's use of a model: ``batch`` the prompts, ``start`` (first logits), then ``step`` per token.

    ``start`` and ``step`` return (batch, vocab) logits of the next token of every row, on the
    prompts' device; ``generate`` calls them in inference mode.
    """

    left_padded = True

    def __init__(self, model: nn.Module, *, decoder_start_token_id: int | None = None) -> None:
        self.model = model
        self.cfg = model.cfg

    def check_fits(self, index: int, prompt: list[int], max_new_tokens: int) -> None:
        """Raise ``PromptError`` when prompt ``index`` with ``max_new_tokens`` does not fit the model's positions."""

    def batch(self, prompts: list[list[int]], *, max_new_tokens: int, pad_id: int, vocab_size: int | None,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, longest) prompts padded with ``pad_id`` (left or right, see ``left_padded``), and the mask
        of their real tokens; checked first (``PromptError`` or ``ValueError``, one line)."""
        from .prompt import num_input_ids  # virtual prompt tokens, when prompts are installed (prompt.py)

        return batch_prompts(prompts, self.cfg, left=self.left_padded, check_fits=self.check_fits,
                             max_new_tokens=max_new_tokens, pad_id=pad_id, vocab_size=vocab_size, device=device,
                             num_input_ids=num_input_ids(self.model, self.cfg.vocab_size))

    def start(self, tokens: torch.Tensor, padding_mask: torch.Tensor, *, max_new_tokens: int) -> torch.Tensor:
        """The prompts' forward: the logits of the first new token."""
        raise NotImplementedError

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """``token`` (batch,) fed back: the logits of the next one."""
        raise NotImplementedError


class DecoderOnly(Decoding):
    """GPT: left-padded prompts, one prefill, then ``model(token, cache=cache)`` per step."""

    def __init__(self, model: nn.Module, *, decoder_start_token_id: int | None = None) -> None:
        if decoder_start_token_id is not None:
            raise ValueError(f"decoder_start_token_id={decoder_start_token_id}: {type(model).__name__} has no "
                             f"decoder of its own (a decoder-only model continues the prompt)")
        super().__init__(model)
        self.cache: KVCache | None = None

    def check_fits(self, index: int, prompt: list[int], max_new_tokens: int) -> None:
        num_positions = self.cfg.max_position_embeddings
        if len(prompt) + max_new_tokens > num_positions:
            raise PromptError(f"prompt {index} has {len(prompt)} tokens; with max_new_tokens={max_new_tokens} that "
                              f"is {len(prompt) + max_new_tokens} positions, but the model has {num_positions} "
                              f"(max_position_embeddings)")

    def start(self, tokens: torch.Tensor, padding_mask: torch.Tensor, *, max_new_tokens: int) -> torch.Tensor:
        # the last new token is never fed back, so it needs no room in the cache
        self.cache = KVCache(tokens.shape[0], tokens.shape[1] + max_new_tokens - 1, padding_mask=padding_mask)
        return self.model(tokens, cache=self.cache, logits_to_keep=1)[:, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        return self.model(token[:, None], cache=self.cache)[:, -1]


class EncoderDecoder(Decoding):
    """T5: right-padded prompts into ``model.encode`` once; the decoder from ``decoder_start_token_id``.

    ``decoder_start_token_id`` None: ``pad_id`` (Hugging Face's T5 and mT5 start the decoder with
    their pad id, 0). A model trained with NeMo's T5 recipe starts it with the tokenizer's
    ``bos_id``: pass that.
    """

    left_padded = False

    def __init__(self, model: nn.Module, *, decoder_start_token_id: int | None = None) -> None:
        super().__init__(model)
        if decoder_start_token_id is not None and not 0 <= decoder_start_token_id < self.cfg.vocab_size:
            raise ValueError(f"decoder_start_token_id={decoder_start_token_id} is outside the model's vocabulary "
                             f"of {self.cfg.vocab_size} tokens")
        self.decoder_start_token_id = decoder_start_token_id
        self.cache: KVCache | None = None
        self.memory: torch.Tensor | None = None
        self.memory_mask: torch.Tensor | None = None

    def _num_positions(self) -> int | None:
        """Rows of each stack's learned absolute position table; None for relative positions (no limit)."""
        return None if self.cfg.relative else self.cfg.max_position_embeddings

    def batch(self, prompts: list[list[int]], *, max_new_tokens: int, pad_id: int, vocab_size: int | None,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        num_positions = self._num_positions()
        if num_positions is not None and max_new_tokens > num_positions:
            raise PromptError(f"max_new_tokens={max_new_tokens} needs {max_new_tokens} decoder positions, but the "
                              f"model has {num_positions} (max_position_embeddings)")
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = pad_id
        return super().batch(prompts, max_new_tokens=max_new_tokens, pad_id=pad_id, vocab_size=vocab_size,
                             device=device)

    def check_fits(self, index: int, prompt: list[int], max_new_tokens: int) -> None:
        num_positions = self._num_positions()
        if num_positions is not None and len(prompt) > num_positions:
            raise PromptError(f"prompt {index} has {len(prompt)} tokens, but the encoder has {num_positions} "
                              f"positions (max_position_embeddings)")

    def start(self, tokens: torch.Tensor, padding_mask: torch.Tensor, *, max_new_tokens: int) -> torch.Tensor:
        batch = tokens.shape[0]
        # every row's decoder starts at position 0: no padding, and the last new token is never fed back
        self.cache = KVCache(batch, max_new_tokens, device=tokens.device)
        self.memory_mask = padding_mask
        self.memory = self.model.encode(tokens, padding_mask)
        first = torch.full((batch, 1), self.decoder_start_token_id, dtype=torch.long, device=tokens.device)
        return self._decode(first, logits_to_keep=1)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        return self._decode(token[:, None])

    def _decode(self, tokens: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        logits = self.model.decode(tokens, self.memory, self.memory_mask, cache=self.cache,
                                   logits_to_keep=logits_to_keep)
        # a model placed over several devices returns them from its last one
        return logits[:, -1].to(tokens.device)


def batch_prompts(prompts: list[list[int]], cfg, *, left: bool, check_fits: Callable[[int, list[int], int], None],
                  max_new_tokens: int, pad_id: int, vocab_size: int | None,
                  device: torch.device, num_input_ids: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, longest) prompts padded with ``pad_id`` on the left (``left``) or the right, and the mask of
    their real tokens. ``check_fits(index, prompt, max_new_tokens)``: the model's position limit.
    ``num_input_ids`` > ``cfg.vocab_size``: ids from ``cfg.vocab_size`` up to it are virtual prompt tokens."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    if vocab_size is not None and not 0 < vocab_size <= cfg.vocab_size:
        raise ValueError(f"vocab_size={vocab_size} must be in 1..{cfg.vocab_size} (the model's vocabulary)")
    if not 0 <= pad_id < cfg.vocab_size:
        raise ValueError(f"pad_id={pad_id} is outside the model's vocabulary of {cfg.vocab_size} tokens")
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise PromptError(f"prompt {i} is empty: every prompt needs at least one token")
        check_fits(i, prompt, max_new_tokens)
    if not prompts:
        return torch.empty(0, 0, dtype=torch.long, device=device), torch.empty(0, 0, dtype=torch.bool, device=device)
    longest = max(len(prompt) for prompt in prompts)

    def pad(row: list, fill) -> list:
        padding = [fill] * (longest - len(row))
        return padding + row if left else row + padding

    tokens = torch.tensor([pad(list(prompt), pad_id) for prompt in prompts])
    if tokens.dtype != torch.long:
        raise PromptError(f"prompts must hold integer token ids, got {tokens.dtype} values")
    real = torch.tensor([pad([True] * len(prompt), False) for prompt in prompts])
    limit = vocab_size or cfg.vocab_size
    outside = real & ((tokens < 0) | (tokens >= limit))
    if num_input_ids is not None and num_input_ids > cfg.vocab_size:
        outside &= ~((tokens >= cfg.vocab_size) & (tokens < num_input_ids))
    if outside.any():
        i, j = (int(n) for n in outside.nonzero()[0])
        position = j - (longest - len(prompts[i])) if left else j
        raise PromptError(f"prompt {i} has token id {int(tokens[i, j])} at position {position}, outside the "
                          f"vocabulary of {limit} tokens (ids 0..{limit - 1})")
    return tokens.to(device), real.to(device)
