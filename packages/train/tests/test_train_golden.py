"""Golden loss curve: the first 20 steps of the shipped ``gpt3/tiny-cpu`` must not change by accident.

fp32, one process, the config's own seed and dropout, on a deterministic synthetic dataset
built here (``make_dataset``: 2,000 documents, 512-token vocabulary). Losses and gradient
norms must match ``golden/tiny_cpu_loss.json`` within 1e-5 relative.

When a change is *meant* to alter the curve (init, data order, the model's math), regenerate
and commit the file, saying why in the commit message:

    BIGNLP_REGENERATE_GOLDEN=1 python -m pytest packages/train/tests/test_train_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_helpers import make_dataset

from bignlp_train.config import load_train_config
from bignlp_train.trainer import pretrain

GOLDEN = Path(__file__).parent / "golden" / "tiny_cpu_loss.json"
RTOL = 1e-5
STEPS = 20


def run_tiny_cpu(tmp_path: Path) -> list[dict]:
    prefix = make_dataset(tmp_path / "data", name="golden", num_docs=2000, seed=7)
    overrides = [
        f"model.data.data_prefix=[1.0,{prefix}]",
        f"exp_manager.explicit_log_dir={tmp_path / 'run'}",
        "trainer.accelerator=cpu",
        "trainer.precision=32",
        f"trainer.max_steps={STEPS}",
        "model.optim.sched.max_steps=200",  # the shipped schedule (trainer.max_steps 200)
        "trainer.log_every_n_steps=1",
        f"trainer.val_check_interval={STEPS}",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=0",
        "model.data.splits_string=98,2,0",
        "exp_manager.create_checkpoint_callback=false",
    ]
    pretrain(load_train_config("gpt3/tiny-cpu", overrides), log=lambda _line: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("step", "loss", "grad_norm", "lr")} for r in rows if r["event"] == "train"]


def test_tiny_cpu_reproduces_the_golden_curve(tmp_path):
    got = run_tiny_cpu(tmp_path)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    if os.environ.get("BIGNLP_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        rows = ",\n".join(f"  {json.dumps(r)}" for r in got)
        GOLDEN.write_text(f'{{"config": "gpt3/tiny-cpu", "dataset": "make_dataset(num_docs=2000, seed=7)",\n'
                          f' "steps": [\n{rows}\n]}}\n')
        pytest.skip(f"regenerated {GOLDEN}")
    want = json.loads(GOLDEN.read_text())["steps"]
    for g, w in zip(got, want, strict=True):
        for key in ("loss", "grad_norm", "lr"):
            assert g[key] == pytest.approx(w[key], rel=RTOL), (
                f"step {g['step']} {key}: {g[key]} != golden {w[key]}; if intended, regenerate with "
                "BIGNLP_REGENERATE_GOLDEN=1 (see this file's docstring)")
