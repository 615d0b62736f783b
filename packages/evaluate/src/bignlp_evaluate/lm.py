"""Our GPT checkpoints as an lm-evaluation-harness model (``lm_eval.api.model.TemplateLM``).

``TemplateLM`` splits each (context, continuation) into tokens exactly as lm-eval's ``hf`` backend
does (trailing context spaces move to the continuation; the whole string is encoded and split at
the context's length; an empty context is the end-of-document token), so what is scored here is
what ``HFLM`` scores. The three request types:

- ``loglikelihood``: requests sorted longest first (a batch's first row is its padded length, and
  a too-large batch fails at once), right-padded into one batch, one forward; the continuation's
  log-probabilities come from the logits of the positions before each of its tokens, and
  ``is_greedy`` says whether every continuation token is its position's argmax. Inputs longer than
  the model's positions keep their last ``max_position_embeddings`` tokens, as ``HFLM`` does.
- ``loglikelihood_rolling``: a document in disjoint windows of ``max_position_embeddings`` tokens,
  each conditioned on the window before it (lm-eval's ``get_rolling_token_windows`` with context 1,
  as ``HFLM``), so perplexities match the ``hf`` backend's.
- ``generate_until``: ``bignlp_models.stream_generate`` (KV cache), greedy unless the task samples,
  stopping a row at the first stop sequence and the batch when every row has stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from bignlp_models import LoadedModel, stream_generate
from bignlp_models.decoding import DecoderOnly

from .progress import Progress

Request = tuple[Any, list[int], list[int]]  # ((context, continuation) or None, context tokens, continuation tokens)


class BigNLPLM(TemplateLM):
    """A loaded decoder-only checkpoint (``bignlp_models.load_model``) answering lm-eval's requests."""

    backend = "causal"

    def __init__(self, loaded: LoadedModel, *, batch_size: int = 4, max_gen_toks: int = 256,
                 log: Callable[[str], None] | None = None, progress_every_s: float = 10.0) -> None:
        super().__init__()
        if not issubclass(loaded.family.decoding, DecoderOnly):
            raise ValueError(f"{loaded.family.name} is not a decoder-only family")
        self.loaded = loaded
        self.model = loaded.model
        self.tok = loaded.tokenizer
        self.batch_size = batch_size
        self._max_gen_toks = max_gen_toks
        self._device = loaded.devices[0]
        self.log = log
        self.progress_every_s = progress_every_s

        if dist.is_available() and dist.is_initialized():
            # lm-eval splits each task's documents across ranks and gathers their metrics on rank 0
            self._rank, self._world_size = dist.get_rank(), dist.get_world_size()

    # --- several processes: what lm-eval's evaluator calls when world_size > 1 ------------------
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._world_size == 1:
            return tensor
        flat = tensor.reshape(-1)
        parts = [torch.empty_like(flat) for _ in range(self._world_size)]
        dist.all_gather(parts, flat)
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self._world_size == 1:
            return [obj]
        out = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._world_size > 1:
            dist.barrier()

    # --- what TemplateLM needs ---------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eod_id

    @property
    def device(self):
        return self._device

    @property
    def max_length(self) -> int:
        return int(self.loaded.config.max_position_embeddings)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids of ``string`` (GPT tokenizers add no special tokens, whatever ``add_special_tokens`` says)."""
        return self.tok.encode(string)

    def tok_decode(self, tokens: Sequence[int], **kwargs) -> str:
        """Text of ``tokens``."""
        return self.tok.decode(list(tokens))

    # --- loglikelihood -----------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              what: str = "loglikelihood", **kwargs) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether it is the greedy continuation) per request."""
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i][1]) - len(requests[i][2]),
                                                            tuple(requests[i][1] + requests[i][2])))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        progress = Progress(what, len(requests), None if disable_tqdm else self.log, every_s=self.progress_every_s)
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start:start + self.batch_size]]
            for i, answer in zip(order[start:start + self.batch_size], self._score_batch(batch)):
                results[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
            progress.update(len(batch))
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_batch(self, batch: list[Request]) -> list[tuple[float, bool]]:
        inputs, conts = [], []
        for _, ctx, cont in batch:
            if not ctx or not cont:
                raise ValueError("a loglikelihood request needs context and continuation tokens")
            if len(cont) > self.max_length:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds the model's {self.max_length} positions")
            inputs.append((ctx + cont)[-(self.max_length + 1):][:-1])  # too long: keep the end
            conts.append(cont)
        width = max(len(x) for x in inputs)
        tokens = torch.zeros(len(inputs), width, dtype=torch.long)
        for row, x in enumerate(inputs):
            tokens[row, :len(x)] = torch.tensor(x)  # right padding: causal attention never sees it
        logits = self.model(tokens.to(self.device))
        logprobs = F.log_softmax(logits.float(), dim=-1).cpu()
        out = []
        for row, (x, cont) in enumerate(zip(inputs, conts)):
            rows = logprobs[row, len(x) - len(cont):len(x)]  # the positions predicting the continuation
            target = torch.tensor(cont)
            greedy = bool((rows.argmax(dim=-1) == target).all())
            out.append((float(rows.gather(1, target[:, None]).sum()), greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole string, in disjoint windows of the model's positions."""
        windows: list[Request] = []
        counts = []
        for (string,) in (req.args for req in requests):
            pairs = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            windows += [(None, ctx, cont) for ctx, cont in pairs]
            counts.append(len(pairs))
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm, what="loglikelihood_rolling windows")
        totals, at = [], 0
        for req, n in zip(requests, counts):
            total = sum(score for score, _ in scores[at:at + n])
            at += n
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # --- generation --------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or the task's sampling) continuations, cut at the first stop sequence."""
        args = [req.args for req in requests]
        groups: dict[str, list[int]] = {}
        for i, (_, gen_kwargs) in enumerate(args):
            groups.setdefault(repr(sorted(gen_kwargs.items())), []).append(i)
        results: list[str | None] = [None] * len(args)
        progress = Progress("generate_until", len(args), None if disable_tqdm else self.log,
                            every_s=self.progress_every_s)
        eos = self.tok_decode([self.eot_token_id])
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(dict(args[indices[0]][1]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = min(int(kwargs.pop("max_gen_toks")), self.max_length - 1)
            sampling = dict(greedy=not kwargs.get("do_sample", False) or float(kwargs.get("temperature", 0)) == 0,
                            temperature=float(kwargs.get("temperature", 1.0) or 1.0),
                            top_k=int(kwargs.get("top_k", 0) or 0), top_p=float(kwargs.get("top_p", 1.0) or 1.0))
            indices = sorted(indices, key=lambda i: -len(self.tok_encode(args[i][0])))
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                prompts = [self.tok_encode(args[i][0])[-(self.max_length - max_new):] or [self.eot_token_id]
                           for i in chunk]
                for i, text in zip(chunk, self._generate(prompts, max_new, until, sampling)):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", args[i], text)
                progress.update(len(chunk))
        return results  # type: ignore[return-value]

    def _generate(self, prompts: list[list[int]], max_new: int, until: list[str], sampling: dict) -> list[str]:
        produced: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * len(prompts)
        for step in stream_generate(self.model, prompts, max_new_tokens=max_new, stop_token_ids=[self.eot_token_id],
                                    pad_id=self.eot_token_id, vocab_size=self.loaded.vocab_size,
                                    device=self.device, **sampling):
            for row, token in enumerate(step):
                if token is not None and not stopped[row]:
                    produced[row].append(token)
                    stopped[row] = any(s in self.tok_decode(produced[row]) for s in until if s)
            if all(stopped):
                break
        texts = []
        for tokens in produced:
            text = self.tok_decode(tokens)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            texts.append(text)
        return texts
