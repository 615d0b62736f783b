"""Text generation with a KV cache: a batch of prompts, greedy or sampled, until a stop token or a length.

The model runs once over the prompts (filling a ``KVCache``), then once per new token over that
token alone. A decoder-only model (GPT) continues its prompts, left-padded into one batch so that
every row's next token sits in the same column; an encoder-decoder (T5) encodes its prompts once
and decodes from a start token. What differs is the family's ``Decoding`` adapter (``decoding``,
named by ``FamilySpec.decoding``); the loop here is one. A row that produces a stop token is done:
it is fed padding while the others go on, and its later outputs are dropped. Sampling draws from a
``torch.Generator`` seeded per call, so a seed reproduces its samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .decoding import DecoderOnly, Decoding, PromptError
from .spec import family_of

__all__ = ["Generation", "PromptError", "Sampling", "decoding_for", "generate", "sample_logits", "stream_generate"]


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How the next token is chosen from a row of logits (the names of Megatron's and NeMo's text generation).

    Greedy (argmax) when ``greedy`` or ``temperature`` is 0. Otherwise logits are divided by
    ``temperature``, cut to the ``top_k`` largest (0: all) and to the smallest set whose
    probability reaches ``top_p`` (1.0: all), and a token is drawn from what is left.
    """

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be ≥ 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0 (0 = no top-k cut), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus cut), got {self.top_p}")

    @property
    def is_greedy(self) -> bool:
        """Whether the choice is the argmax (no random draw)."""
        return self.greedy or self.temperature == 0.0


@dataclass(frozen=True)
class Generation:
    """What ``generate`` returns, one entry per prompt, in the prompts' order."""

    tokens: list[list[int]]  # the new tokens (a stop token that ended the row included), without the prompt
    stop_reasons: list[str]  # "stop": produced a stop token; "length": reached max_new_tokens


def sample_logits(logits: torch.Tensor, sampling: Sampling, *, generator: torch.Generator | None = None,
                  vocab_size: int | None = None) -> torch.Tensor:
    """The next token of each row of ``logits`` (batch, vocab) → (batch,) int64.

    ``vocab_size``: the tokenizer's vocabulary when the model's is padded (Megatron pads it to a
    multiple of 128): the padding rows' logits are never chosen.
    """
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    if sampling.is_greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # keep a token while the tokens before it hold less than top_p: the most likely one always stays
        beyond = probs.cumsum(dim=-1) - probs >= sampling.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(beyond, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def generate(model: nn.Module, prompts: list[list[int]], *, max_new_tokens: int, greedy: bool = False,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             stop_token_ids: int | Iterable[int] = (), pad_id: int = 0, vocab_size: int | None = None,
             device: torch.device | str | None = None, decoder_start_token_id: int | None = None) -> Generation:
    """Up to ``max_new_tokens`` new tokens for each prompt (token ids), all prompts in one batch.

    A decoder-only model (GPT) continues each prompt; for an encoder-decoder (T5) a prompt is the
    encoder's input and the new tokens are the decoder's, after ``decoder_start_token_id`` (None:
    ``pad_id``, Hugging Face's T5 start; a model trained with NeMo's recipe starts with the
    tokenizer's ``bos_id``; an error for a decoder-only model).

    Sampling as ``Sampling`` describes, from a generator seeded with ``seed``. A row stops at the
    first of ``stop_token_ids`` it produces (e.g. the end-of-document token). ``pad_id`` is what
    the padding and finished rows feed the model; it is never attended to. ``vocab_size``:
    the tokenizer's vocabulary, when the model's is padded. ``device``: the model's by default.
    ``model``: a family's model (its ``cfg`` gives the positions and the vocabulary; a model of no
    registered family is run as a decoder-only one); it runs in eval mode without autograd, and is
    left in the mode it was in.

    Raises ``PromptError`` (a ``ValueError``) for an empty prompt, a prompt that does not fit the
    model's positions with ``max_new_tokens``, or a token id outside the vocabulary.
    """
    stop_token_ids = _as_ids(stop_token_ids)
    steps = list(_decode(model, prompts, max_new_tokens=max_new_tokens,
                         sampling=Sampling(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p),
                         seed=seed, stop_token_ids=stop_token_ids, pad_id=pad_id, vocab_size=vocab_size,
                         device=device, decoder_start_token_id=decoder_start_token_id))
    if not steps:
        return Generation(tokens=[[] for _ in prompts], stop_reasons=["length"] * len(prompts))
    produced = torch.stack([token for token, _ in steps], dim=1).tolist()  # (batch, steps)
    counts = torch.stack([active for _, active in steps], dim=1).sum(dim=1).tolist()
    stops = set(stop_token_ids)
    tokens = [row[:count] for row, count in zip(produced, counts)]
    return Generation(tokens=tokens, stop_reasons=["stop" if row and row[-1] in stops else "length" for row in tokens])


def stream_generate(model: nn.Module, prompts: list[list[int]], *, max_new_tokens: int, greedy: bool = False,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                    stop_token_ids: int | Iterable[int] = (), pad_id: int = 0, vocab_size: int | None = None,
                    device: torch.device | str | None = None,
                    decoder_start_token_id: int | None = None) -> Iterator[list[int | None]]:
    """``generate``, one step at a time: each step's new token per prompt, None for prompts already stopped.

    The same arguments, tokens and errors as ``generate`` (raised by this call, before the first step).
    """
    steps = _decode(model, prompts, max_new_tokens=max_new_tokens,
                    sampling=Sampling(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p),
                    seed=seed, stop_token_ids=stop_token_ids, pad_id=pad_id, vocab_size=vocab_size, device=device,
                    decoder_start_token_id=decoder_start_token_id)
    return ([t if a else None for t, a in zip(token.tolist(), active.tolist())] for token, active in steps)


def decoding_for(model: nn.Module, *, decoder_start_token_id: int | None = None) -> Decoding:
    """The ``Decoding`` adapter of ``model``'s family (``FamilySpec.decoding``); decoder-only for a model of
    no registered family (a wrapper that forwards GPT's ``forward(tokens, cache=..., logits_to_keep=...)``)."""
    try:
        adapter = family_of(model).decoding
    except TypeError:
        adapter = DecoderOnly
    return adapter(model, decoder_start_token_id=decoder_start_token_id)


def _decode(model: nn.Module, prompts: list[list[int]], *, max_new_tokens: int, sampling: Sampling, seed: int,
            stop_token_ids: int | Iterable[int], pad_id: int, vocab_size: int | None,
            device: torch.device | str | None,
            decoder_start_token_id: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The prompts checked and batched now, then per step: (batch,) new tokens (pad_id in stopped rows) and
    (batch,) whether each row was still going."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if vocab_size is None:  # a tensor-parallel model's vocabulary padded for divisibility (tensor_parallel.py)
        vocab_size = getattr(model, "unpadded_vocab_size", None)
    decoding = decoding_for(model, decoder_start_token_id=decoder_start_token_id)
    tokens, padding_mask = decoding.batch(prompts, max_new_tokens=max_new_tokens, pad_id=pad_id,
                                          vocab_size=vocab_size, device=device)
    stop_ids = torch.tensor(sorted(set(_as_ids(stop_token_ids))), dtype=torch.long, device=device)
    generator = None if sampling.is_greedy else torch.Generator(device=device).manual_seed(seed)
    return _steps(model, decoding, tokens, padding_mask, max_new_tokens=max_new_tokens, sampling=sampling,
                  generator=generator, stop_ids=stop_ids, pad_id=pad_id, vocab_size=vocab_size)


def _steps(model: nn.Module, decoding: Decoding, tokens: torch.Tensor, padding_mask: torch.Tensor, *,
           max_new_tokens: int, sampling: Sampling, generator: torch.Generator | None, stop_ids: torch.Tensor,
           pad_id: int, vocab_size: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    batch = tokens.shape[0]
    if max_new_tokens == 0 or batch == 0:
        return
    finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
    with _inference(model):
        logits = _whole(decoding.start(tokens, padding_mask, max_new_tokens=max_new_tokens))
    for step in range(max_new_tokens):
        with _inference(model):
            active = ~finished
            token = sample_logits(logits, sampling, generator=generator, vocab_size=vocab_size)
            token = token.masked_fill_(finished, pad_id)
            if stop_ids.numel():
                finished = finished | torch.isin(token, stop_ids)
        yield token, active
        if step == max_new_tokens - 1 or bool(finished.all()):
            return
        with _inference(model):
            logits = _whole(decoding.step(token))


def _whole(logits: torch.Tensor) -> torch.Tensor:
    """Logits of the whole vocabulary: a tensor-parallel model's come split along it (a DTensor), and every
    rank gathers them all, so that all ranks choose the same token (bignlp_models.tensor_parallel)."""
    full_tensor = getattr(logits, "full_tensor", None)
    return full_tensor() if full_tensor is not None else logits


def _as_ids(ids: int | Iterable[int]) -> tuple[int, ...]:
    return (ids,) if isinstance(ids, int) else tuple(ids)


@contextlib.contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    # Entered around each step rather than around the whole loop: a streaming caller's own code
    # runs between steps, and must not find autograd off or its model switched to eval.
    training = model.training
    if training:
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if training:
            model.train()
