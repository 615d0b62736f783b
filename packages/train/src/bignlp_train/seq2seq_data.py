"""Fine-tuning data: parallel source/target text files → tokenized examples → T5 micro-batches.

One example a line in each file (the seed's custom-task format and the T5 files of a ``task-data``
artifact). With the base model's tokenizer: the encoder reads ``<bos> source <eos>`` (a source longer than
``max_src_seq_length`` keeps its tail: the question at the end of a SQuAD source survives), the
decoder reads ``<bos> target`` and predicts ``target <eos>`` (a target longer than ``max_tgt_seq_length``
loses its end). ``<bos>``/``<eos>`` are the tokenizer's, else ``[CLS]``/``[SEP]`` (a BERT vocabulary), as
pretraining's span corruption uses them.

Training reads a continuous stream of examples: epoch ``e`` is a permutation of the examples drawn from
``seed + e`` (``shuffle``), sample ``i`` of the run is example ``perm[i mod N]`` of epoch ``i // N``. A
checkpoint's ``consumed_samples`` is therefore all a resumed run needs to continue the same stream.
Micro-batches are padded to their longest example.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bignlp_contracts import ArtifactError, InputError

from .data import SequentialSampler


@dataclass(frozen=True)
class Roles:
    """The token ids a seq2seq example is framed with."""

    bos: int
    eos: int
    pad: int


def token_roles(tokenizer) -> Roles:
    """``<bos>``/``<eos>``/``<pad>`` of the base model's tokenizer (``[CLS]``/``[SEP]`` for a BERT vocabulary)."""
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.cls_id
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    if bos is None or eos is None or bos == eos:
        raise ArtifactError(f"the base model's tokenizer ({tokenizer.type}) has no distinct bos/eos (or cls/sep) "
                            "tokens to frame seq2seq examples with",
                            hint="fine-tune a T5/mT5 checkpoint whose tokenizer was prepared for T5 (bignlp-dataprep "
                                 "--num-sentinel-tokens)")
    return Roles(bos, eos, pad)


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, without their line ends (a missing file: one InputError line)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read it ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{p}:{line}: not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def check_pair(key: str, src: str, tgt: str) -> int:
    """Both files' line counts must agree; returns it. One InputError line with both counts otherwise."""
    n_src, n_tgt = len(read_lines(src)), len(read_lines(tgt))
    if n_src != n_tgt:
        raise InputError(f"model.data.{key}: {src} has {n_src} lines but {tgt} has {n_tgt}: source and target "
                         "files must hold one example a line each",
                         hint="regenerate them together (bignlp-dataprep run --config squad/v1.1 ...)")
    if n_src == 0:
        raise InputError(f"model.data.{key}: {src} holds no examples")
    return n_src


class Seq2SeqExamples:
    """A file pair, tokenized and framed (see the module docstring)."""

    def __init__(self, src: str, tgt: str, tokenizer, roles: Roles, *, max_src: int, max_tgt: int) -> None:
        self.src_path, self.tgt_path = str(src), str(tgt)
        sources, self.targets = read_lines(src), read_lines(tgt)
        if len(sources) != len(self.targets):
            raise InputError(f"{src} has {len(sources)} lines but {tgt} has {len(self.targets)}")
        self.roles = roles
        keep_src, keep_tgt = max_src - 2, max_tgt - 1
        self.encoder: list[list[int]] = []
        self.decoder: list[list[int]] = []  # target ids (cut), without bos/eos
        self.truncated_sources = 0
        for ids in tokenizer.encode_batch(sources):
            if len(ids) > keep_src:
                ids = ids[len(ids) - keep_src:]  # keep the tail
                self.truncated_sources += 1
            self.encoder.append([roles.bos, *ids, roles.eos])
        self.decoder = [ids[:keep_tgt] for ids in tokenizer.encode_batch(self.targets)]

    def __len__(self) -> int:
        return len(self.encoder)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A T5 micro-batch (t5_data.t5_batch's keys) of the examples ``indices``, padded to the longest."""
        r = self.roles
        enc = [self.encoder[i] for i in indices]
        dec = [[r.bos, *self.decoder[i]] for i in indices]
        lab = [[*self.decoder[i], r.eos] for i in indices]
        s_enc, s_dec = max(map(len, enc)), max(map(len, dec))
        encoder_tokens = torch.full((len(enc), s_enc), r.pad, dtype=torch.int64)
        decoder_tokens = torch.full((len(enc), s_dec), r.pad, dtype=torch.int64)
        labels = torch.zeros((len(enc), s_dec), dtype=torch.int64)
        for row, (e, d, y) in enumerate(zip(enc, dec, lab)):
            encoder_tokens[row, : len(e)] = torch.tensor(e)
            decoder_tokens[row, : len(d)] = torch.tensor(d)
            labels[row, : len(y)] = torch.tensor(y)
        enc_len = torch.tensor([len(e) for e in enc])[:, None]
        dec_len = torch.tensor([len(d) for d in dec])[:, None]
        encoder_mask = torch.arange(s_enc)[None, :] < enc_len
        decoder_mask = torch.arange(s_dec)[None, :] < dec_len
        return {"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens, "labels": labels,
                "loss_mask": decoder_mask.to(torch.float32), "encoder_mask": encoder_mask,
                "decoder_mask": decoder_mask}


def example_index(sample: int, num_examples: int, *, seed: int, shuffle: bool) -> int:
    """Which example sample ``sample`` of the run's stream is (epoch permutations drawn from ``seed + epoch``)."""
    epoch, pos = divmod(sample, num_examples)
    if not shuffle:
        return pos
    return int(_permutation(num_examples, seed + epoch)[pos])


_PERMS: dict[tuple[int, int], torch.Tensor] = {}


def _permutation(n: int, seed: int) -> torch.Tensor:
    key = (n, seed)
    if key not in _PERMS:
        if len(_PERMS) > 4:
            _PERMS.clear()
        _PERMS[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return _PERMS[key]


def train_micro_batches(examples: Seq2SeqExamples, *, start: int, num_samples: int, micro_batch_size: int,
                        seed: int, shuffle: bool, data_parallel_rank: int = 0,
                        data_parallel_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """This data-parallel rank's micro-batches of stream samples ``start .. start + num_samples`` (Megatron's
    sequential sampler over the stream: every rank its slice of each ``micro_batch_size × dp`` run)."""
    sampler = SequentialSampler(start + num_samples, start, micro_batch_size, data_parallel_rank, data_parallel_size)
    n = len(examples)
    for samples in sampler:
        yield examples.batch([example_index(s, n, seed=seed, shuffle=shuffle) for s in samples])
