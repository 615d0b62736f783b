"""mT5 adapted end to end through the console scripts: a tiny mT5 (the shipped SentencePiece model, 100 sentinels)
pretrained on the multilingual demo slice, then

- ``bignlp-train finetune --config mt5/xquad`` (SQuAD v1.1 training rows, validation per XQuAD language) and
  ``bignlp-evaluate xquad`` on its checkpoint;
- ``bignlp-train finetune --config mt5/custom_task`` on parallel text files and ``bignlp-evaluate custom``;
- ``bignlp-train prompt-learn --config mt5/squad`` on the frozen base and ``bignlp-evaluate prompt``.

Each run keeps the shipped config and shrinks only sizes and steps. The XQuAD files are stand-ins in XQuAD's form
(SQuAD v1.1 JSON, ``xquad.{lang}.json``): the shipped SQuAD dev slice under three language names, since the real
XQuAD is not reachable offline. What is checked: every artifact is written and valid, the fine-tuning loss falls, the
prompt-learning validation loss falls, the evaluations score every example of every language.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bignlp_contracts import read_checkpoint, read_manifest
from support import DATA, console_script, run

pytestmark = pytest.mark.slow

LANGS = ("de", "en", "es")
SMALL_MT5 = ("trainer.accelerator=cpu", "model.seq_length=64", "model.max_position_embeddings=128",
             "model.data.seq_length_dec=24", "model.hidden_size=64", "model.ffn_hidden_size=128",
             "model.num_attention_heads=4", "model.kv_channels=16")
# fine-tuning: one process, fp32, a few steps of small batches on 64-token sources
FT = ("trainer.accelerator=cpu", "trainer.precision=32", "trainer.devices=1", "trainer.max_epochs=null",
      "trainer.log_every_n_steps=1", "trainer.max_steps=30", "trainer.val_check_interval=30",
      "model.data.train_ds.global_batch_size=8", "model.data.train_ds.micro_batch_size=8",
      "model.data.train_ds.max_src_seq_length=64", "model.data.train_ds.max_tgt_seq_length=12",
      "model.data.validation_ds.global_batch_size=8", "model.data.validation_ds.micro_batch_size=8",
      "model.data.validation_ds.max_src_seq_length=64", "model.data.validation_ds.max_tgt_seq_length=12",
      "trainer.limit_val_batches=2", "model.optim.lr=3e-3")


def _ok(args: list[str], timeout: float = 900):
    res = run(args, timeout=timeout)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    return res


def _records(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["step"])


def _assert_loss_falls(run_dir: Path, window: int = 5, margin: float = 0.5) -> tuple[float, float]:
    """The mean training loss of the last ``window`` steps below the first ``window``'s by more than ``margin``."""
    losses = [r["loss"] for r in _records(run_dir) if r.get("event") == "train"]
    assert len(losses) >= 2 * window, losses
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    assert last < first - margin, f"{run_dir.name}: training loss {first:.3f} -> {last:.3f}"
    return first, last


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny mT5 base (run dir ``base``) and task data ``squad_data/v1.1`` + ``xquad_data`` (mt5/xquad's layout)."""
    root = tmp_path_factory.mktemp("mt5adapt")
    lines = gzip.decompress((DATA / "corpus" / "demo-multi.jsonl.gz").read_bytes()).splitlines()[:60]
    (root / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    _ok([console_script("bignlp-dataprep"), "preprocess", "--input", str(root / "docs.jsonl"),
         "--output-prefix", str(root / "data" / "multi"), "--tokenizer-type", "sentencepiece",
         "--tokenizer-model", str(DATA / "spm" / "multi_unigram_8000.model"), "--num-sentinel-tokens", "100",
         "--split-sentences"])
    _ok([console_script("bignlp-train"), "pretrain", "--config", "mt5/tiny-cpu",
         f"model.data.data_prefix=[1.0,{root / 'data' / 'multi_text_document'}]",
         f"exp_manager.explicit_log_dir={root / 'base'}", "trainer.max_steps=20", "trainer.val_check_interval=20",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=0", "model.micro_batch_size=8",
         "model.global_batch_size=8", *SMALL_MT5])
    squad = DATA / "squad"
    _ok([console_script("bignlp-dataprep"), "run", "--config", "squad/v1.1", f"data_dir={root / 'squad_data' / 'v1.1'}",
         f"train_source={squad / 'train-v1.1-slice.json'}", f"dev_source={squad / 'dev-v1.1-slice.json'}"])
    stand_ins = root / "xquad_files"
    stand_ins.mkdir()
    for lang in LANGS:
        (stand_ins / f"xquad.{lang}.json").write_bytes((squad / "dev-v1.1-slice.json").read_bytes())
    _ok([console_script("bignlp-dataprep"), "run", "--config", "xquad", f"data_dir={root / 'xquad_data'}",
         f"base_url={stand_ins}", f"languages={','.join(LANGS)}"])
    return root


def test_finetune_mt5_xquad_then_evaluate_xquad(root, tmp_path):
    run_dir = tmp_path / "xquad_run"
    out = _ok([console_script("bignlp-train"), "finetune", "--config", "mt5/xquad", f"data_dir={root}",
               f"model.restore_from_path={root / 'base'}", f"exp_manager.explicit_log_dir={run_dir}", *FT])
    first, last = _assert_loss_falls(run_dir)
    ckpt, manifest = read_checkpoint(run_dir)
    assert manifest.summary["task"] == "finetune"
    assert manifest.summary["base_checkpoint"] == str(read_checkpoint(root / "base")[0].resolve())
    # the validation files are scored per language (names: [de, en, es]) and on average
    for lang in LANGS:
        assert f"validation_exact_string_match_{lang}" in manifest.summary, manifest.summary
    assert "validation_exact_string_match" in manifest.summary
    assert "validation at step 30" in out.stdout + out.stderr
    res = _ok([console_script("bignlp-evaluate"), "xquad", "--checkpoint", str(run_dir), "--data",
               str(root / "xquad_data"), "--output", str(tmp_path / "eval"), "--device", "cpu"])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["results"]) == {*LANGS, "average"}
    assert all(set(v) == {"exact_match", "f1"} for v in results["results"].values())
    assert len(results["predictions"]) == 3 * 100
    assert read_manifest(tmp_path / "eval").kind == "evaluation"
    assert "average" in res.stdout
    print(f"mt5/xquad: train loss {first:.3f} -> {last:.3f}; xquad {results['results']['average']}")


def test_finetune_mt5_custom_task_then_evaluate_custom(root, tmp_path):
    # a task an mT5 learns in a few steps: answer with the source's first word
    words = ["Haus", "casa", "maison", "Katze", "gato", "chat", "Baum", "árbol", "arbre", "Wasser", "agua", "eau"]
    src = [f"first word: {words[i % len(words)]} {words[(i * 5 + 3) % len(words)]} {words[(i * 7 + 1) % len(words)]}"
           for i in range(96)]
    tgt = [line.split()[2] for line in src]
    for split, rows in (("train", slice(0, 80)), ("validation", slice(80, 96))):
        (tmp_path / f"{split}_src.txt").write_text("\n".join(src[rows]) + "\n", encoding="utf-8")
        (tmp_path / f"{split}_tgt.txt").write_text("\n".join(tgt[rows]) + "\n", encoding="utf-8")
    run_dir = tmp_path / "custom_run"
    _ok([console_script("bignlp-train"), "finetune", "--config", "mt5/custom_task",
         f"model.restore_from_path={root / 'base'}", f"exp_manager.explicit_log_dir={run_dir}",
         f"model.data.train_ds.src_file_name={tmp_path / 'train_src.txt'}",
         f"model.data.train_ds.tgt_file_name={tmp_path / 'train_tgt.txt'}",
         f"model.data.validation_ds.src_file_name={tmp_path / 'validation_src.txt'}",
         f"model.data.validation_ds.tgt_file_name={tmp_path / 'validation_tgt.txt'}", *FT])
    first, last = _assert_loss_falls(run_dir)
    _, manifest = read_checkpoint(run_dir)
    assert "validation_exact_string_match" in manifest.summary
    _ok([console_script("bignlp-evaluate"), "custom", "--checkpoint", str(run_dir), "--data",
         str(tmp_path / "validation_src.txt"), "--targets", str(tmp_path / "validation_tgt.txt"),
         "--output", str(tmp_path / "eval"), "--device", "cpu"])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert len(results["predictions"]) == 16 and "exact_string_match" in results["results"]["custom"]
    print(f"mt5/custom_task: train loss {first:.3f} -> {last:.3f}; {results['results']}")


def test_prompt_learn_mt5_squad_then_evaluate_prompt(root, tmp_path):
    prompt = root / "squad_data" / "v1.1" / "prompt"
    run_dir = tmp_path / "prompt_run"
    _ok([console_script("bignlp-train"), "prompt-learn", "--config", "mt5/squad",
         f"model.language_model_path={root / 'base'}", f"exp_manager.explicit_log_dir={run_dir}",
         f"model.data.train_ds=[{prompt / 'train.jsonl'}]", f"model.data.validation_ds=[{prompt / 'validation.jsonl'}]",
         "trainer.accelerator=cpu", "trainer.max_epochs=null", "trainer.max_steps=60", "trainer.val_check_interval=60",
         "trainer.log_every_n_steps=1", "trainer.limit_val_batches=2", "model.global_batch_size=8",
         "model.micro_batch_size=8", "model.optim.lr=3e-2", "model.optim.sched.warmup_steps=2",
         "model.data.max_new_tokens=8"])
    # only the prompts learn, on a frozen base pretrained for 20 steps: its encoder passes the prompts almost no
    # gradient (measured: grad norm 0.005 at step 1, then below 1e-3) and the validation loss moves little
    # (measured 8.3304 -> 8.3279 and 8.3073 -> 8.3065 in two runs); a longer-trained base is what prompts can
    # steer (test_train_prompt_learning.py, test_train_prompt_t5.py)
    val = [r["val_loss"] for r in _records(run_dir) if r.get("event") == "validation"]
    assert len(val) == 2 and val[1] < val[0], val
    losses = [r["loss"] for r in _records(run_dir) if r.get("event") == "train"]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    out = run_dir / "prompt_checkpoint"
    assert read_manifest(out).kind == "prompt-checkpoint"
    _ok([console_script("bignlp-evaluate"), "prompt", "--prompt-checkpoint", str(out), "--data",
         str(prompt / "test.jsonl"), "--output", str(tmp_path / "eval"), "--device", "cpu"])
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert read_manifest(tmp_path / "eval").kind == "evaluation"
    print(f"mt5/squad prompt learning: train loss {first:.3f} -> {last:.3f}, validation {val[0]:.4f} -> {val[1]:.4f}; "
          f"{results['results']}")
