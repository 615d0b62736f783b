"""bignlp-hptool's inference search against the real Triton server: 2 batch sizes x 2 instance counts x TP/PP.

Each point is exported with ``bignlp-export triton``, served on free ports of 127.0.0.1 by ``bignlp-export
serve`` (stopped by its PID), and measured with ``bignlp-export bench``; the CSV ranks the points within
the latency limit by throughput. PP = 2 spreads each instance's layers over two devices (here both the CPU);
TP = 2 splits each instance's matrices over two processes (rank 0 in Triton's stub, one worker); TP = 2 with
PP = 2 is recorded, not measured (an instance does one or the other).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, console_script

sys.path.insert(0, str(REPO / "packages" / "evaluate" / "tests"))
from evaluate_helpers import make_checkpoint  # noqa: E402  (a small random GPT checkpoint)


@pytest.mark.slow
def test_inference_search_writes_its_csv(tmp_path: Path):
    if not (REPO / ".venv-triton" / "bin" / "python").exists() and not os.environ.get("BIGNLP_TRITON_ENV"):
        pytest.skip("no .venv-triton (make triton-env creates it; make test does)")
    ckpt = make_checkpoint(tmp_path / "gpt", "gpt")
    logs = tmp_path / "search"
    cmd = [console_script("bignlp-hptool"), "run", "--config", "gpt3/tiny-cpu", "run_training_hp_search=false",
           "run_inference_hp_search=true", f"inference_settings.checkpoint={ckpt}",
           "inference_settings.max_batch_sizes=[1,2]", "inference_settings.instance_counts=[1,2]",
           "inference_settings.tensor_parallel_sizes=[1,2]", "inference_settings.pipeline_parallel_sizes=[1,2]",
           "inference_settings.input_seq_len=16",
           "inference_settings.output_seq_len=8", "inference_settings.requests_per_point=2",
           "inference_settings.max_latency_ms=60000", f"train_settings.logs={logs}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = list(csv.DictReader((logs / "inference" / "final_summary.csv").open()))
    measured = [r for r in rows if r["Status"] == "measured"]
    assert sorted((r["TP"], r["PP"], r["Max Batch Size"], r["Instances"]) for r in measured) == [
        (tp, pp, b, k) for tp, pp in (("1", "1"), ("1", "2"), ("2", "1")) for b in "12" for k in "12"], rows
    for r in measured:
        assert float(r["Latency p90 (ms)"]) > 0 and float(r["Tokens per Second"]) > 0 and r["Within Latency"] == "True"
    skipped = [r for r in rows if r["Status"] != "measured"]
    assert len(skipped) == 4 and all(r["Status"] == "not-measured" and r["TP"] == r["PP"] == "2" and "not both" in
                                     r["Reason"] for r in skipped), skipped
    tokens = [float(r["Tokens per Second per GPU"]) for r in measured]
    assert tokens == sorted(tokens, reverse=True)  # ranked by throughput
    assert "top 10 within" in (logs / "inference" / "top_10_configs.log").read_text()
    for point in (logs / "inference").glob("tp*"):  # every server was stopped through serve's SIGTERM path
        assert "stopped" in (point / "serve.out").read_text(), point
    spread = (logs / "inference" / "tp1_pp2_bs1_i1" / "repo" / "gpt" / "config.pbtxt").read_text()
    assert 'key: "devices_per_instance" value: { string_value: "2" }' in spread
    split = (logs / "inference" / "tp2_pp1_bs1_i1" / "repo" / "gpt" / "config.pbtxt").read_text()
    assert 'key: "tensor_parallel_size" value: { string_value: "2" }' in split
