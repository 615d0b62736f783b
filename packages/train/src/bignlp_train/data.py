"""Training data: dataset artifacts → megatron-core GPT datasets → micro-batches.

Sample indices (which tokens form sample i of each split) come from megatron-core's
``GPTDataset`` and ``BlendedDataset``: the document shuffling, sample cutting and
blending Megatron-LM uses, from the same .bin/.idx files. Batches are
read in order from ``consumed_samples`` on (Megatron's sequential sampler), which
is all a checkpoint needs to resume the data stream exactly.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bignlp_contracts import ArtifactError, ConfigError, DatasetRef, resolve_dataset

from .config import ModelConfig, TrainConfig

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class BlendEntry:
    """One .bin/.idx pair and its share of the blend."""

    weight: float
    ref: DatasetRef


@dataclass(frozen=True)
class TokenizerInfo:
    """What every dataset of a blend must agree on, from the artifacts' manifests."""

    type: str
    vocab_size: int
    eod_id: int
    summary: dict[str, Any] = field(default_factory=dict, compare=False)
    artifact_dir: Path | None = field(default=None, compare=False)  # where tokenizer/ files live


class MegatronTokenizer:
    """The little of a tokenizer megatron-core's GPTDataset touches (eod, vocab_size, pad)."""

    def __init__(self, info: TokenizerInfo) -> None:
        self.eod = info.eod_id
        self.vocab_size = info.vocab_size
        self.pad = -1  # no pad token: megatron-core then pads short samples with -1 and masks them
        # Part of the dataset cache key; megatron-core serialises it with the config.
        self.unique_identifiers = {"class": "BigNLPTokenizer", "type": info.type, "vocab_size": info.vocab_size,
                                   "eod": info.eod_id}


def resolve_blend(cfg: ModelConfig) -> list[BlendEntry]:
    """Resolve ``model.data.data_prefix`` to validated dataset pairs with normalised weights.

    A directory holding several pairs (several JSON keys) shares its weight among them
    in proportion to their token counts.
    """
    entries: list[BlendEntry] = []
    for weight, path in cfg.data.blend():
        refs = resolve_dataset(path)
        tokens = [max(int(r.entry.get("num_tokens") or 1), 1) for r in refs]
        entries.extend(BlendEntry(weight * t / sum(tokens), r) for r, t in zip(refs, tokens))
    total = sum(e.weight for e in entries)
    return [BlendEntry(e.weight / total, e.ref) for e in entries]


def blend_tokenizer(entries: list[BlendEntry]) -> TokenizerInfo:
    """The blend's one tokenizer; an ArtifactError if two datasets were tokenized differently."""
    infos = []
    for e in entries:
        tok = e.ref.tokenizer
        try:
            infos.append(TokenizerInfo(str(tok["type"]), int(tok["vocab_size"]), int(tok["eod_id"]), dict(tok),
                                       e.ref.artifact_dir))
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(
                f"{e.ref.artifact_dir}: manifest summary.tokenizer lacks type/vocab_size/eod_id",
                hint="re-create the dataset with bignlp-dataprep preprocess",
            ) from None
    first = infos[0]
    for e, info in zip(entries[1:], infos[1:]):
        if info != first:
            raise ArtifactError(
                f"datasets {entries[0].ref.prefix} and {e.ref.prefix} were tokenized differently "
                f"({first.type}/{first.vocab_size}/eod {first.eod_id} vs "
                f"{info.type}/{info.vocab_size}/eod {info.eod_id})",
                hint="blend only datasets made with the same tokenizer",
            )
    return first


def check_vocab(entries: list[BlendEntry], tokenizer: TokenizerInfo, model_vocab_size: int, *, source: str) -> None:
    """Every token id of the data must have a row in the model's embedding."""
    if tokenizer.vocab_size > model_vocab_size:
        raise ArtifactError(
            f"dataset {entries[0].ref.prefix} has a vocabulary of {tokenizer.vocab_size} tokens "
            f"but the model's is {model_vocab_size} ({source})",
            hint=f"set model.tokenizer.vocab_size={tokenizer.vocab_size} (or null to take the dataset's), "
            "or train on data tokenized with the model's tokenizer",
        )


def _megatron_datasets():
    """megatron-core's dataset modules, imported on first use and quietly.

    Importing megatron.core warns that Apex/Transformer Engine are absent: irrelevant to
    its data pipeline, and noise on a user's terminal.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import (
            blended_megatron_dataset_builder,
            blended_megatron_dataset_config,
            gpt_dataset,
        )
    return blended_megatron_dataset_builder, blended_megatron_dataset_config, gpt_dataset


def split_bounds(splits_string: str) -> list[tuple[float, float] | None]:
    """megatron-core's own reading of a splits string: [start, end) fractions per split, None if empty."""
    _, config = _megatron_datasets()[:2]
    return config.convert_split_vector_to_split_matrix(config.parse_and_normalize_split(splits_string))


def num_sequences(prefix: Path) -> int:
    """Sequence count from a Megatron .idx header (what megatron-core splits by)."""
    with open(f"{prefix}.idx", "rb") as f:
        header = f.read(34)
    if len(header) < 34:
        raise ArtifactError(f"{prefix}.idx: truncated index header", hint="re-create the dataset")
    return struct.unpack("<Q", header[18:26])[0]


def check_splits(cfg: TrainConfig, entries: list[BlendEntry]) -> list[bool]:
    """Which splits exist; an error when a needed split is missing or has no documents.

    megatron-core loops forever on a split with a positive share but no sequences,
    so a small dataset with the seed's "99990,8,2" must be caught here.
    """
    data, trainer = cfg.model.data, cfg.trainer
    bounds = split_bounds(data.splits_string)
    needed = [True, trainer.limit_val_batches > 0, trainer.limit_test_batches > 0]
    key = "model.data.splits_string"
    for name, bound, need, limit in zip(SPLITS, bounds, needed, ("", "limit_val_batches", "limit_test_batches")):
        if bound is None and need:
            fix = f"or set trainer.{limit}=0" if limit else ""
            raise ConfigError(
                f"{key}={data.splits_string!r} gives the {name} split no share", hint=f"give it one {fix}"
            )
        if bound is None:
            continue
        for e in entries:
            n = num_sequences(e.ref.prefix)
            if int(round(bound[1] * n)) - int(round(bound[0] * n)) < 1:
                raise ConfigError(
                    f"{key}={data.splits_string!r} leaves the {name} split of {e.ref.prefix} with none of its "
                    f"{n} sequences",
                    hint=f"give the {name} split at least 1/{n} of the total (now {bound[1] - bound[0]:.3g}), "
                    "use a larger dataset, or give it 0 to drop it",
                )
    return [b is not None for b in bounds]


def split_sizes(cfg: TrainConfig) -> list[int]:
    """Samples to build per split, as NeMo computes them (so index caches match)."""
    gbs, trainer = cfg.model.global_batch_size, cfg.trainer
    num_validations = trainer.max_steps // trainer.val_check_interval + 1
    return [
        trainer.max_steps * gbs,
        num_validations * trainer.limit_val_batches * gbs,
        trainer.limit_test_batches * gbs,
    ]


def build_datasets(cfg: TrainConfig, entries: list[BlendEntry], tokenizer: TokenizerInfo, cache_dir: Path) -> list:
    """Train/valid/test datasets (None for a split with no share), built with megatron-core."""
    builder_mod, _, gpt = _megatron_datasets()
    check_splits(cfg, entries)
    data = cfg.model.data
    prefixes = [str(e.ref.prefix) for e in entries]
    weights = [e.weight for e in entries] if len(entries) > 1 else None
    config = gpt.GPTDatasetConfig(
        random_seed=cfg.model.seed,
        sequence_length=cfg.model.seq_length,
        blend=(prefixes, weights),
        split=data.splits_string,
        path_to_cache=str(cache_dir),
        tokenizer=MegatronTokenizer(tokenizer),
        reset_position_ids=data.reset_position_ids,
        reset_attention_mask=data.reset_attention_mask,
        eod_mask_loss=data.eod_mask_loss,
        create_attention_mask=False,  # the model builds causal (and document) masks itself
    )
    sizes = split_sizes(cfg)
    builder = builder_mod.BlendedMegatronDatasetBuilder(gpt.GPTDataset, sizes, lambda: True, config)
    with _process_group():
        return builder.build()


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    """A one-process gloo group while megatron-core builds indices, unless one exists already.

    megatron-core 0.16's BlendedDataset asks ``torch.distributed.get_rank()`` without
    checking that a process group exists; an in-memory store makes one without a network.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group(backend="gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class SequentialSampler:
    """Megatron's pretraining sampler: consecutive micro-batches starting at ``consumed_samples``.

    With data parallelism each rank takes its slice of every ``micro_batch_size × dp``
    run of indices, so a global batch holds the same samples whatever the DP size.
    """

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int = 0, data_parallel_size: int = 1) -> None:
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // (self.micro_batch_size * self.data_parallel_size)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.micro_batch_size * self.data_parallel_size
        start = self.data_parallel_rank * self.micro_batch_size
        for first in range(self.consumed_samples, self.total_samples - step + 1, step):
            yield list(range(first + start, first + start + self.micro_batch_size))


def micro_batches(dataset, *, start: int, num_samples: int, micro_batch_size: int, num_workers: int = 0,
                  pin_memory: bool = False, seed: int = 0, data_parallel_rank: int = 0,
                  data_parallel_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
    """This data-parallel rank's micro-batches of samples ``start .. start + num_samples``, in order.

    The loader gets its own generator: by default a DataLoader draws its base seed from
    the global torch RNG, which would shift dropout masks depending on when loaders are made.
    """
    if start + num_samples > len(dataset):
        raise ArtifactError(
            f"the dataset index holds {len(dataset)} samples, {start + num_samples} are needed "
            "(a checkpoint from a run with a different batch size or step count?)"
        )
    sampler = SequentialSampler(start + num_samples, start, micro_batch_size, data_parallel_rank, data_parallel_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
    yield from loader
