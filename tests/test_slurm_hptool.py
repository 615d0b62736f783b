"""bignlp-hptool's training search on the real local Slurm cluster (``cluster_type=bcm``).

gpt3/tiny-cpu's search on 2 emulated nodes of 1 CPU (one task per node): the candidates the memory
model admits are submitted at once as jobs of slurm-templates/train.sbatch (the TP=2 one over both
nodes, gloo between them), measured from their metrics.jsonl; the one predicted out of memory is
never submitted. The measured best must be among the predicted top 3.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from slurm_support import job_fields
from support import DATA, REPO, console_script


def _dataset(tmp_path: Path) -> str:
    raw = tmp_path / "slice.jsonl"
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        raw.write_text("".join(next(f) for _ in range(200)))
    out = subprocess.run([console_script("bignlp-dataprep"), "preprocess", "--input", str(raw), "--output-prefix",
                          str(tmp_path / "data" / "demo"), "--json-keys", "text", "--tokenizer-type", "gpt2-bpe",
                          "--vocab-file", str(DATA / "gpt2" / "vocab.json"), "--merges-file",
                          str(DATA / "gpt2" / "merges.txt"), "--append-eod"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return str(tmp_path / "data" / "demo_text_document")


def test_search_submits_admitted_candidates_to_slurm(slurm_env: dict[str, str], tmp_path: Path):
    data = _dataset(tmp_path)
    logs = tmp_path / "search"
    env = {**os.environ, **slurm_env}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    cmd = [console_script("bignlp-hptool"), "run", "--config", "gpt3/tiny-cpu", "cluster_type=bcm",
           f"cluster.templates_dir={REPO / 'slurm-templates'}", "cluster.cpus_per_task=1", "cluster.poll_s=2",
           "train_settings.num_nodes=2", "train_settings.gpus_per_node=1", "train_settings.max_steps_per_run=6",
           f"train_settings.logs={logs}", f"train_settings.data_prefix={data}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    submitted = [line for line in out.stdout.splitlines() if line.startswith("submitted ")]
    assert len(submitted) == 2, out.stdout
    for line in submitted:  # each candidate ran as a Slurm job of the train template, named after it
        name, job = line.split()[1], line.split()[5]
        fields = job_fields(slurm_env, job)
        assert fields["JobName"] == f"bignlp-hp:{name}" and fields["JobState"] == "COMPLETED", fields
        assert (logs / "training_logs" / name / "metrics.jsonl").is_file()
    assert "tp2_pp1_mbs2_ac0 as Slurm job" in out.stdout and "(2 node(s))" in out.stdout
    # the CSV lists the candidates in the tool's predicted order (admitted first, best predicted throughput first)
    rows = list(csv.DictReader((logs / "final_results" / "final_summary.csv").open()))
    measured = [r["Config Name"] for r in rows if r["Status"] == "measured"]
    oom = [r["Config Name"] for r in rows if r["Status"] == "predicted-OOM"]
    assert len(measured) == 2 and oom, rows
    assert not any((logs / "training_logs" / name).exists() for name in oom)  # never submitted
    summary = json.loads((logs / "final_results" / "summary.json").read_text())
    assert summary["optimal"] in [r["Config Name"] for r in rows[:3]]
