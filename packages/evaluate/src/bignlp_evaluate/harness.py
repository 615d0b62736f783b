"""``evaluate_checkpoint``: a GPT checkpoint through lm-evaluation-harness tasks, into an ``evaluation`` artifact.

Order of work: cheap checks first (task names, task files, the output path, the checkpoint's family
from its manifest), then the task files row by row, then the weights, then the requests. The
artifact is built under a temporary name and its manifest written last, so a failure at any point
leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from bignlp_contracts import (
    EVALUATION,
    ArtifactError,
    ConfigError,
    InputError,
    Producer,
    atomic_directory,
    checkpoint_family,
    discover_run_env,
    git_commit,
    input_record,
    read_checkpoint,
    slurm_job_record,
    write_manifest,
)

from . import __version__
from .results import csv_table, markdown_table, metrics_summary, table_rows
from .tasks import TaskSpec, missing_task_files, parse_task_names, resolve_tasks, write_task_overrides

PACKAGE = "bignlp-evaluate"


def check_output(output: str | os.PathLike) -> Path:
    """``output`` must be new or an empty directory (an evaluation is never overwritten)."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"output {output} already exists and is not empty",
                          hint="give a new --output directory (or remove the old evaluation)")
    return output


def check_decoder_only(checkpoint: str | os.PathLike) -> str:
    """The checkpoint's family, from its manifest; a family that is not decoder-only is an ArtifactError."""
    from bignlp_models import FAMILIES
    from bignlp_models.decoding import DecoderOnly

    path, manifest = read_checkpoint(checkpoint, verify="none")
    family = checkpoint_family(manifest)
    spec = FAMILIES.get(family)
    if spec is not None and not issubclass(spec.decoding, DecoderOnly):
        raise ArtifactError(f"{path}: a {family} (encoder-decoder) checkpoint; the harness tasks score a "
                            f"decoder-only model's log-likelihoods",
                            hint="evaluate a GPT checkpoint; T5/mT5 tasks (SQuAD, GLUE) are not in this release")
    return family


def download_hint(specs: Sequence[TaskSpec], data_dir: str | os.PathLike) -> str:
    """The command that fetches ``specs``' files into ``data_dir``."""
    return (f"fetch it: bignlp-evaluate download --tasks {','.join(s.name for s in specs)} --data-dir {data_dir} "
            f"--url-base URL (or write it yourself: see bignlp-evaluate's README, 'Offline task data')")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    tasks: str | Sequence[str],
    data_dir: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int = 4,
    dtype: str = "float32",
    device: str = "cpu",
    limit: int | None = None,
    bootstrap_iters: int = 0,
    config: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> Path:
    """Run ``tasks`` on ``checkpoint`` with lm-eval and write an ``evaluation`` artifact at ``output``.

    ``tasks``: the seed's names (``lambada``, ``wikitext2``...), ``all_tasks``, or lm-eval task names.
    ``data_dir``: one ``<task>.jsonl`` per standard task. ``device``: one device, or a comma list over
    which the model's layers are split (``load_model``'s placement). ``dtype``: the parameters' (``float32``,
    ``bfloat16``, ``float16``). ``limit``: the first N documents of each task only.
    ``bootstrap_iters``: lm-eval's bootstrap for the stderr of non-mean metrics (0: none).
    ``config``: the resolved config written as ``config.yaml``. ``log``: progress lines.
    Returns ``output``.
    """
    import torch

    specs = resolve_tasks(parse_task_names(tasks))
    missing = missing_task_files(specs, data_dir)
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(p.name for p in missing[1:])})" if len(missing) > 1 else ""
        lacking = [s for s in specs if Path(data_dir) / s.file_name in missing]
        raise InputError(f"no task file {missing[0]}{more}", hint=download_hint(lacking, data_dir))
    output = check_output(output)
    check_decoder_only(checkpoint)
    with tempfile.TemporaryDirectory(prefix="bignlp-evaluate-tasks-") as include_dir:
        online = write_task_overrides(specs, data_dir, include_dir)
        if not online:  # every task reads a local file: never reach for the Hub
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        elif log:
            log(f"from lm-eval's own data (the Hub or its cache): {', '.join(s.name for s in online)}")
        from bignlp_models import load_model

        from .lm import BigNLPLM

        with process_group(device) as (rank, world_size, device):
            if rank != 0:
                log = None  # one progress stream: rank 0's
            if log:
                log(f"loading {checkpoint} ({dtype}, {device})")
            # "cuda:0,cuda:1": a model too large for one device, its layers split over them in order
            devices = device.split(",") if "," in device else None
            loaded = load_model(checkpoint, device=device if devices is None else devices[0], devices=devices,
                                dtype=getattr(torch, dtype))
            lm = BigNLPLM(loaded, batch_size=batch_size, log=log, progress_every_s=progress_every_s)
            results = _run_lm_eval(lm, specs, include_dir, online=bool(online), limit=limit,
                                   bootstrap_iters=bootstrap_iters)
    if rank != 0:
        return output  # lm-eval gathered every rank's metrics on rank 0, which writes the artifact
    names = {s.lm_eval_task: s.name for s in specs}
    rows = table_rows(results["results"], names)
    with atomic_directory(output) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=str, sort_keys=True) + "\n")
        (tmp / "results.md").write_text(markdown_table(rows, model=loaded.path.name))
        (tmp / "results.csv").write_text(csv_table(rows))
        (tmp / "config.yaml").write_text(yaml.safe_dump(config or {}, sort_keys=False))
        inputs = [input_record(loaded.path)] + [
            input_record(Path(data_dir) / s.file_name) for s in specs if (Path(data_dir) / s.file_name).is_file()]
        write_manifest(tmp, EVALUATION,
                       producer=Producer(PACKAGE, __version__, git_commit(Path(__file__).parent), slurm_job_record()),
                       files=["results.json", "results.md", "results.csv", "config.yaml"], config=config,
                       inputs=inputs,
                       summary={"tasks": [s.name for s in specs], "lm_eval_tasks": names, "metrics":
                                metrics_summary(rows), "limit": limit, "dtype": dtype,
                                "lm_eval_version": _lm_eval_version(), "family": loaded.family.name,
                                "processes": world_size})
    if log:
        log(f"wrote {output}")
    return output


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[int, int, str]]:
    """(rank, world size, device) of this process; under torchrun, srun or ``--nproc-per-node`` a process group is
    joined first (gloo on CPUs, NCCL on GPUs: each local rank its own GPU) and left after."""
    import torch
    import torch.distributed as dist

    env = discover_run_env()
    if not env.is_distributed:
        yield 0, 1, device
        return
    if device.startswith("cuda") and "," not in device:
        device = f"cuda:{env.local_rank}"
        torch.cuda.set_device(device)
    os.environ.update(env.torch_env())
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=env.rank,
                            world_size=env.world_size)
    try:
        yield env.rank, env.world_size, device
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _run_lm_eval(lm, specs: Sequence[TaskSpec], include_dir: str, *, online: bool, limit: int | None,
                 bootstrap_iters: int) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    # only our overrides to index (fast) unless a task comes from lm-eval's own files
    manager = TaskManager(include_path=include_dir, include_defaults=online)
    results = lm_eval.simple_evaluate(model=lm, tasks=[s.lm_eval_task for s in specs], task_manager=manager,
                                      limit=limit, bootstrap_iters=bootstrap_iters, log_samples=False)
    if results is None:
        if lm.rank != 0:
            return {}  # lm-eval returns results on rank 0 only
        raise RuntimeError("lm-eval returned no results")
    return dict(results)


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
