"""Golden loss curves: the first 20 steps of the shipped ``gpt3/tiny-cpu``, ``t5/tiny-cpu`` and ``mt5/tiny-cpu``
must not change by accident.

fp32, one process, each config's own seed and dropout, on deterministic datasets built here: GPT on
``make_dataset`` (2,000 documents, 512-token vocabulary), T5 on ``make_t5_dataset`` (a synthetic WordPiece
vocabulary with 100 sentinels), mT5 on the shipped multilingual slice tokenized with the shipped
SentencePiece model (``make_spm_t5_dataset``). Losses, gradient norms and learning rates must match
``golden/*.json`` within 1e-5 relative.

When a change is *meant* to alter a curve (init, data order, the model's math), regenerate and commit
the file, saying why in the commit message:

    BIGNLP_REGENERATE_GOLDEN=1 python -m pytest packages/train/tests/test_train_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_helpers import make_dataset, make_spm_t5_dataset, make_t5_dataset

from bignlp_train.config import load_train_config
from bignlp_train.trainer import pretrain

GOLDEN_DIR = Path(__file__).parent / "golden"
RTOL = 1e-5
STEPS = 20
# config → (golden file, how its dataset is made, the dataset maker)
CASES = {
    "gpt3/tiny-cpu": ("tiny_cpu_loss.json", "make_dataset(num_docs=2000, seed=7)",
                      lambda d: make_dataset(d, name="golden", num_docs=2000, seed=7)),
    "t5/tiny-cpu": ("t5_tiny_cpu_loss.json", "make_t5_dataset(num_docs=2000, seed=7)",
                    lambda d: make_t5_dataset(d, name="golden", num_docs=2000, seed=7)),
    "mt5/tiny-cpu": ("mt5_tiny_cpu_loss.json", "make_spm_t5_dataset() (tests/data demo-multi + spm)",
                     lambda d: make_spm_t5_dataset(d, name="golden")),
}


def run_tiny_cpu(config: str, tmp_path: Path) -> list[dict]:
    prefix = CASES[config][2](tmp_path / "data")
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
    pretrain(load_train_config(config, overrides), log=lambda _line: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("step", "loss", "grad_norm", "lr")} for r in rows if r["event"] == "train"]


@pytest.mark.parametrize("config", list(CASES))
def test_tiny_cpu_reproduces_the_golden_curve(config, tmp_path):
    name, dataset, _ = CASES[config]
    golden = GOLDEN_DIR / name
    got = run_tiny_cpu(config, tmp_path)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    if os.environ.get("BIGNLP_REGENERATE_GOLDEN") == "1":
        GOLDEN_DIR.mkdir(exist_ok=True)
        rows = ",\n".join(f"  {json.dumps(r)}" for r in got)
        golden.write_text(f'{{"config": "{config}", "dataset": "{dataset}",\n "steps": [\n{rows}\n]}}\n')
        pytest.skip(f"regenerated {golden}")
    want = json.loads(golden.read_text())["steps"]
    for g, w in zip(got, want, strict=True):
        for key in ("loss", "grad_norm", "lr"):
            assert g[key] == pytest.approx(w[key], rel=RTOL), (
                f"{config} step {g['step']} {key}: {g[key]} != golden {w[key]}; if intended, regenerate with "
                "BIGNLP_REGENERATE_GOLDEN=1 (see this file's docstring)")
