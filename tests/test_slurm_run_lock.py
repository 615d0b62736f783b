"""One writer per run directory on the real local Slurm cluster: the same run submitted twice (no singleton
between them: two job names), one job per emulated node, both writing one shared directory. The second
job fails with the lock line naming the first; the first runs on as if alone.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import pytest

from slurm_support import job_fields, sbatch, wait_gone
from support import DATA, REPO, console_script, run

OVERRIDES = ("trainer.max_steps=40 trainer.val_check_interval=40 trainer.limit_val_batches=1 "
             "trainer.log_every_n_steps=1 trainer.limit_test_batches=0 model.data.splits_string=90,10,0")


def _dataset(tmp_path: Path) -> Path:
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(300)]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(lines))
    out = run([console_script("bignlp-dataprep"), "preprocess", "--input", str(raw), "--output-prefix",
               str(tmp_path / "data" / "demo"), "--json-keys", "text", "--tokenizer-type", "gpt2-bpe",
               "--vocab-file", str(DATA / "gpt2" / "vocab.json"), "--merges-file", str(DATA / "gpt2" / "merges.txt"),
               "--append-eod", "--workers", "1"], timeout=300)
    assert out.returncode == 0, out.stderr
    return tmp_path / "data"


def _train_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in (path.read_text().splitlines() if path.is_file() else [])]
    return [r for r in rows if r.get("event") == "train"]


@pytest.mark.slow  # several minutes on 2 cores: make test-all
def test_the_same_run_submitted_twice_the_second_fails_with_the_lock_line(slurm_env: dict[str, str], tmp_path: Path):
    data = _dataset(tmp_path)
    run_dir = tmp_path / "run"
    env = {**slurm_env, "CONFIG": "gpt3/tiny-cpu", "DATA_PREFIX": str(data), "RESULTS_DIR": str(run_dir),
           "OVERRIDES": OVERRIDES, "BIGNLP_VENV": str(Path(sys.executable).parents[1])}
    template = str(REPO / "slurm-templates" / "train.sbatch")
    logs = [tmp_path / "first.out", tmp_path / "second.out"]
    # Different names: --dependency=singleton does not order them, nothing but the lock stands between them.
    first = sbatch(env, ["--nodes=1", "--cpus-per-task=1", f"--job-name=lock-a-{tmp_path.name}",
                         f"--output={logs[0]}", template], tmp_path)
    deadline = time.monotonic() + 120
    while not _train_records(run_dir):
        assert time.monotonic() < deadline, f"the first job never trained: {job_fields(slurm_env, first)}"
        time.sleep(0.3)
    second = sbatch(env, ["--nodes=1", "--cpus-per-task=1", f"--job-name=lock-b-{tmp_path.name}",
                          f"--output={logs[1]}", template], tmp_path)
    wait_gone(slurm_env, second, timeout_s=120)
    a_running = job_fields(slurm_env, first)["JobState"]
    wait_gone(slurm_env, first, timeout_s=300)

    a, b = job_fields(slurm_env, first), job_fields(slurm_env, second)
    text = [log.read_text() for log in logs]
    assert a_running == "RUNNING", f"the first job ended before the second was refused: {text[1]}"
    assert {a["NodeList"], b["NodeList"]} == {"n1", "n2"}, (a, b)  # one directory shared by two nodes
    assert (b["JobState"], b["ExitCode"]) == ("FAILED", "2:0"), f"{b}\n{text[1]}"
    errors = [line for line in text[1].splitlines() if line.startswith("bignlp-train: error:")]
    assert len(errors) == 1, text[1]
    assert f"run directory {run_dir} is in use by bignlp-train pretrain (pid " in errors[0]
    assert f", Slurm job {first}, since " in errors[0], errors[0]
    assert (a["JobState"], a["ExitCode"]) == ("COMPLETED", "0:0"), f"{a}\n{text[0]}"
    assert [r["step"] for r in _train_records(run_dir)] == list(range(1, 41))  # every step once: the first's
    assert (run_dir / "run.lock").read_text() == ""  # released at the end
