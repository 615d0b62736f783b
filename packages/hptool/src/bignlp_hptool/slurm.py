"""``cluster_type: bcm``: the search runs as Slurm jobs of ``slurm-templates/train.sbatch``, submitted at once.

Each admitted candidate (up to ``limit_search_runs``) becomes one job of its own node count with one task
per GPU (``gpus_per_node``), named ``job_name_prefix + candidate``, writing its run directory under
``training_logs/`` and its output to ``training_logs/<candidate>.log``. The tool then watches the jobs
(``scontrol``, every ``cluster.poll_s``) until each has ended, cancelling those still queued or running
``max_minutes_per_run`` + 10 minutes after submission, and reads every run's ``metrics.jsonl`` as a
local search does. The template requeues a run stopped by its time limit (exit 75) so that it resumes;
a search run must not, so ``REQUEUE=0`` is passed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bignlp_contracts import ConfigError

from .config import HPToolConfig
from .hardware import gpu_kind
from .search import Candidate, record_result
from .trainyaml import candidate_train_config, write_yaml

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


def find_train_template(cfg: HPToolConfig) -> Path:
    """``train.sbatch``: in ``cluster.templates_dir``, else ``slurm-templates/`` here or in the checkout we run from."""
    if cfg.cluster.templates_dir:
        path = Path(cfg.cluster.templates_dir) / "train.sbatch"
        if not path.is_file():
            raise ConfigError(f"cluster.templates_dir={cfg.cluster.templates_dir}: no train.sbatch there",
                              hint="point it at BigNLP's slurm-templates directory")
        return path.resolve()
    for root in (Path.cwd(), *Path(__file__).resolve().parents):
        path = root / "slurm-templates" / "train.sbatch"
        if path.is_file():
            return path
    raise ConfigError("cluster_type=bcm needs slurm-templates/train.sbatch and none was found",
                      hint="set cluster.templates_dir=DIR (BigNLP's slurm-templates directory)")


def _data_prefix(prefix) -> str:
    """train.sbatch's DATA_PREFIX: a blend list as ``[w,path,...]``."""
    if isinstance(prefix, (list, tuple)):
        return "[" + ",".join(str(x) for x in prefix) + "]"
    return str(prefix)


def submit(cfg: HPToolConfig, c: Candidate, *, template: Path, config_path: Path, run_dir: Path,
           log_path: Path) -> str:
    """Submit one candidate; its job id."""
    ts, cl = cfg.train_settings, cfg.cluster
    cmd = ["sbatch", "--parsable", f"--job-name={cl.job_name_prefix}{c.name}", f"--nodes={c.nodes}",
           f"--ntasks-per-node={min(ts.gpus_per_node, c.layout.tp * c.layout.pp * c.layout.dp)}",
           f"--time={int(ts.max_minutes_per_run) + 5}", f"--output={log_path}", "--no-requeue"]
    if gpu_kind(ts).accelerator == "gpu":
        cmd.append(f"--gpus-per-node={ts.gpus_per_node}")
    cmd += [f"--partition={cl.partition}"] if cl.partition else []
    cmd += [f"--account={cl.account}"] if cl.account else []
    cmd += [f"--cpus-per-task={cl.cpus_per_task}"] if cl.cpus_per_task else []
    cmd += ["--exclusive"] if cl.exclusive else []
    env = {**os.environ, "CONFIG": str(config_path), "DATA_PREFIX": _data_prefix(ts.data_prefix),
           "RESULTS_DIR": str(run_dir), "REQUEUE": "0", "PYTHONUNBUFFERED": "1"}
    # the jobs run bignlp-train from this environment (the template's srun inherits PATH)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run([*cmd, str(template)], capture_output=True, text=True, env=env, timeout=60)
    job = out.stdout.strip().split(";")[0]
    if out.returncode != 0 or not job.isdigit():
        why = (out.stderr.strip().splitlines() or [out.stdout.strip()])[-1]
        raise ConfigError(f"sbatch refused search run {c.name}: {why}",
                          hint="check cluster.partition/account and the node counts the candidates need")
    return job


def job_state(job: str) -> tuple[str | None, int | None]:
    """(JobState, exit code) of a job from ``scontrol``; (None, None) once Slurm has forgotten it."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return None, None
    state = re.search(r"\bJobState=(\S+)", out.stdout)
    code = re.search(r"\bExitCode=(\d+):(\d+)", out.stdout)
    rc = None
    if code:
        rc = int(code.group(1)) if int(code.group(2)) == 0 else 128 + int(code.group(2))
    return (state.group(1) if state else None), rc


def run_on_slurm(cfg: HPToolConfig, chosen: list[Candidate], base: dict, logs: Path, log) -> None:
    """Submit the chosen candidates, wait for them, and record each one's result."""
    if not chosen:
        return
    for tool in ("sbatch", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            raise ConfigError(f"cluster_type=bcm but {tool} is not on PATH",
                              hint="run where the Slurm client commands are installed, or cluster_type=local")
    ts = cfg.train_settings
    template = find_train_template(cfg)
    jobs: dict[str, tuple[Candidate, Path, Path]] = {}
    try:
        for c in chosen:
            run_dir = logs / "training_logs" / c.name
            if run_dir.exists():
                shutil.rmtree(run_dir)
            train_cfg = candidate_train_config(base, c.layout, num_nodes=c.nodes, gpus_per_node=ts.gpus_per_node,
                                               max_steps=ts.max_steps_per_run, max_minutes=ts.max_minutes_per_run,
                                               run_dir=run_dir, data_prefix=ts.data_prefix, wandb=cfg.wandb)
            config_path = logs / "candidate_configs" / f"{c.name}.yaml"
            write_yaml(config_path, train_cfg, header=f"bignlp-hptool candidate {c.name}")
            log_path = run_dir.parent / f"{c.name}.log"
            job = submit(cfg, c, template=template, config_path=config_path, run_dir=run_dir, log_path=log_path)
            c.status = "launched"
            jobs[job] = (c, run_dir, log_path)
            log(f"submitted {c.name} as Slurm job {job} ({c.nodes} node(s))")
    except BaseException:
        _cancel(list(jobs))
        raise
    deadline = time.monotonic() + ts.max_minutes_per_run * 60 + 600
    pending = dict(jobs)
    try:
        while pending:
            for job in list(pending):
                state, rc = job_state(job)
                if state is None or state.split("+")[0] in ENDED:
                    c, run_dir, log_path = pending.pop(job)
                    if state is None:
                        c.reason = "the job left Slurm's queue before its end was seen"
                    elif state not in ("COMPLETED", "FAILED"):
                        c.reason = f"Slurm job {state.lower()}"
                    record_result(c, rc, run_dir=run_dir, log_path=log_path, log=log)
            if pending and time.monotonic() > deadline:
                _cancel(list(pending))
                for c, run_dir, log_path in pending.values():
                    c.reason = f"cancelled {ts.max_minutes_per_run * 60 + 600:.0f} s after submission"
                    record_result(c, None, run_dir=run_dir, log_path=log_path, log=log)
                pending.clear()
            if pending:
                time.sleep(cfg.cluster.poll_s)
    except BaseException:  # interrupted: leave no search run behind
        _cancel(list(pending))
        raise


def _cancel(jobs: list[str]) -> None:
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=60)
