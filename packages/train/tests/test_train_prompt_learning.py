"""bignlp-train prompt-learn: prompts learned on a frozen tiny base, tasks added without moving earlier ones,
kill -9 and resume, and the one-line refusals before training.

The base is a tiny GPT (and T5) pretrained for a few hundred steps on "question : <fillers and one key> ?" →
key (prompt_helpers.py); the task asks for the key as "context : ... answer :", a format the base never saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from prompt_helpers import assert_one_line, generations, make_base, make_task_data, prompt_overrides

from bignlp_models import load_state_dict_only
from bignlp_models.prompt import load_prompt_checkpoint
from bignlp_train import prompt_learning as pl
from bignlp_train.cli import main
from bignlp_train.config.prompt import load_prompt_config


@pytest.fixture(scope="module")
def gpt_base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("gptbase") / "base", "gpt", pretrain_steps=400)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    return {"train": make_task_data(root / "train.jsonl", num=512, seed=1),
            "test": make_task_data(root / "test.jsonl", num=64, seed=2),
            "other": make_task_data(root / "other.jsonl", num=256, seed=3, taskname="other")}


def learn(base: Path, run_dir: Path, train: Path, *extra: str, config: str = "gpt3/squad", **kw):
    """Run the library entry point; return (result, the frozen base model as training held it at the end)."""
    held = {}
    original = pl.load_model

    def load_and_keep(*args, **kwargs):  # the real load_model; the test keeps a handle on the model it returns
        held["loaded"] = original(*args, **kwargs)
        return held["loaded"]

    pl.load_model = load_and_keep
    try:
        result = pl.prompt_learn(load_prompt_config(config, prompt_overrides(base, run_dir, train, *extra, **kw)),
                                 log=lambda _line: None)
    finally:
        pl.load_model = original
    return result, held["loaded"].model


def assert_base_unchanged(model: torch.nn.Module, base: Path) -> None:
    """Every base weight bit-identical to the checkpoint's, none trainable, none with a gradient."""
    saved, _ = load_state_dict_only(base)
    state = model.state_dict()
    base = [(n, p) for n, p in model.named_parameters() if ".table." not in n]  # the installed prompts aside
    assert len(base) == len(saved) and all(not p.requires_grad and p.grad is None for _, p in base)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name


@pytest.mark.parametrize("style,extra", [
    ("p-tuning", ("trainer.max_steps=150",)),
    ("prompt-tuning", ("trainer.max_steps=150", "model.optim.lr=3e-2",
                       "model.prompt_tuning.new_prompt_init_methods=[random]")),
])
def test_prompts_learn_the_task_on_a_frozen_gpt(gpt_base, data, tmp_path, style, extra):
    result, model = learn(gpt_base, tmp_path / "run", data["train"], *extra, style=style)
    assert result.output == tmp_path / "run" / "prompt_checkpoint" and result.step == 150
    assert_base_unchanged(model, gpt_base)
    _, without = generations(gpt_base, None, data["test"])
    _, with_prompts = generations(gpt_base, result.output, data["test"])
    assert without <= 0.2  # the base alone does not answer in this format (chance among 8 keys: 0.125)
    assert with_prompts >= 0.3, (without, with_prompts)  # measured: 0.44-0.47 p-tuning, 0.86 prompt tuning
    print(f"{style}: exact match {without:.3f} without prompts, {with_prompts:.3f} with")
    ckpt = load_prompt_checkpoint(result.output)
    assert ckpt.rows.shape == (4, 64) and list(ckpt.tasks) == ["keys"]
    assert ckpt.tasks["keys"]["virtual_prompt_style"] == style
    # only the prompts: no encoder, no optimizer state, no base weight in the artifact
    assert sorted(p.name for p in result.output.iterdir()) == [
        "config.yaml", "manifest.json", "prompt_config.json", "prompts.safetensors"]


def test_a_second_task_leaves_the_first_bit_identical(gpt_base, data, tmp_path):
    first, _ = learn(gpt_base, tmp_path / "first", data["train"], "trainer.max_steps=40")
    before, _ = generations(gpt_base, first.output, data["test"])
    template = "<|VIRTUAL_PROMPT_0|>context : {context} <|VIRTUAL_PROMPT_1|>answer : {answer}"
    second, model = learn(gpt_base, tmp_path / "second", data["other"], "trainer.max_steps=20",
                          f"model.restore_path={first.output}", "model.existing_tasks=[keys]",
                          "model.prompt_tuning.new_prompt_init_methods=[text]",
                          "model.prompt_tuning.new_prompt_init_text=[question]", taskname="other", template=template,
                          style="prompt-tuning", splits=(3, 2))
    assert_base_unchanged(model, gpt_base)
    a, b = load_prompt_checkpoint(first.output), load_prompt_checkpoint(second.output)
    assert list(b.tasks) == ["keys", "other"] and b.tasks["other"]["offset"] == 4 and b.rows.shape[0] == 9
    assert torch.equal(b.rows[:4], a.rows)  # the first task's virtual tokens, bit for bit
    assert not torch.equal(b.rows[4:], a.rows)
    after, _ = generations(gpt_base, second.output, data["test"])
    assert after == before


HOOK = """
import os, runpy, sys, time
at = int(os.environ["HANG_STEP"])
from bignlp_train import progress
original = progress.Progress.train_step
def train_step(self, step, **kw):
    original(self, step, **kw)
    if step == at:
        time.sleep(600)
progress.Progress.train_step = train_step
sys.argv = ["bignlp-train", *sys.argv[1:]]
runpy.run_module("bignlp_train", run_name="__main__")
"""


def _records(run_dir: Path) -> dict[int, dict]:
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return {r["step"]: r for r in rows if r["event"] == "train"}


def test_kill_9_then_resume_equals_the_uninterrupted_run(gpt_base, data, tmp_path):
    extra = ("trainer.max_steps=12", "trainer.log_every_n_steps=1", "model.p_tuning.dropout=0.2",
             "exp_manager.checkpoint_callback_params.every_n_steps=4")
    args = ["prompt-learn", "--config", "gpt3/squad",
            *prompt_overrides(gpt_base, tmp_path / "x", data["train"], *extra)]

    def argv(run_dir: Path) -> list[str]:
        return [a.replace(f"={tmp_path / 'x'}", f"={run_dir}") for a in args]

    straight = subprocess.run([sys.executable, "-m", "bignlp_train", *argv(tmp_path / "straight")],
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", HOOK, *argv(run_dir)], env={**os.environ, "HANG_STEP": "7"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while 7 not in (_records(run_dir) if (run_dir / "metrics.jsonl").is_file() else {}):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before step 7"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "prompt_checkpoint").exists()
    resumed = subprocess.run([sys.executable, "-m", "bignlp_train", *argv(run_dir)], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and "step-00000004" in resumed.stdout
    want, got = _records(tmp_path / "straight"), _records(run_dir)
    for step in range(1, 13):
        assert [got[step][k] for k in ("loss", "grad_norm", "lr")] == [want[step][k] for k in ("loss", "grad_norm",
                                                                                              "lr")], step
    a = load_prompt_checkpoint(tmp_path / "straight" / "prompt_checkpoint")
    b = load_prompt_checkpoint(run_dir / "prompt_checkpoint")
    assert torch.equal(a.rows, b.rows)


# --- refusals: one line, before training ------------------------------------------------------------------
def _cli(base, run_dir, train, *extra, **kw):
    return CliRunner().invoke(main, ["prompt-learn", "--config", "gpt3/squad",
                                     *prompt_overrides(base, run_dir, train, *extra, **kw)])


def test_template_field_not_in_the_data(gpt_base, data, tmp_path):
    result = _cli(gpt_base, tmp_path / "run", data["train"],
                  template="<|VIRTUAL_PROMPT_0|>title: {title} context: {context} answer: {answer}")
    assert_one_line(result, 4, "train.jsonl:1", "{title}")
    assert not (tmp_path / "run").exists()


def test_virtual_token_splits_not_summing_to_the_total(gpt_base, data, tmp_path):
    result = _cli(gpt_base, tmp_path / "run", data["train"],
                  template="<|VIRTUAL_PROMPT_0|>context: {context} <|VIRTUAL_PROMPT_1|>answer: {answer}")
    assert_one_line(result, 2, "virtual_token_splits")
    overrides = prompt_overrides(gpt_base, tmp_path / "run", data["train"])
    overrides = [o.replace("virtual_token_splits: [4]", "virtual_token_splits: [3]") for o in overrides]
    result = CliRunner().invoke(main, ["prompt-learn", "--config", "gpt3/squad", *overrides])
    assert_one_line(result, 2, "sum to 3", "total_virtual_tokens=4")


def test_answer_field_not_at_the_end(gpt_base, data, tmp_path):
    result = _cli(gpt_base, tmp_path / "run", data["train"],
                  template="<|VIRTUAL_PROMPT_0|>answer: {answer} context: {context}")
    assert_one_line(result, 2, "answer_field", "must end with {answer}")


@pytest.mark.parametrize("style", ["p-tuning", "prompt-tuning"])
def test_both_styles_are_selectable(style):
    cfg = load_prompt_config("gpt3/squad", [f"model.virtual_prompt_style={style}"])
    assert cfg.model.virtual_prompt_style == style
    result = CliRunner().invoke(main, ["prompt-learn", "--config", "gpt3/squad",
                                       "model.virtual_prompt_style=prompt_tuning"])
    assert_one_line(result, 2, "virtual_prompt_style='prompt_tuning'", "use prompt-tuning")


def test_restoring_prompts_onto_another_base(gpt_base, data, tmp_path):
    first, _ = learn(gpt_base, tmp_path / "first", data["train"], "trainer.max_steps=2")
    other = make_base(tmp_path / "other", "gpt", seed=7)  # same tokenizer files, other weights
    result = _cli(other, tmp_path / "second", data["other"], f"model.restore_path={first.output}",
                  "model.existing_tasks=[keys]", taskname="other")
    assert_one_line(result, 3, "pins base manifest sha256")
    assert not (tmp_path / "second").exists()
    other = make_base(tmp_path / "retok", "gpt", seed=7, extra_words=("extra",))  # another vocabulary
    result = _cli(other, tmp_path / "second", data["other"], f"model.restore_path={first.output}",
                  "model.existing_tasks=[keys]", taskname="other")
    assert_one_line(result, 3, "another tokenizer")


def test_help():
    result = CliRunner().invoke(main, ["prompt-learn", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "prompt-learn --config gpt3/squad" in result.output


def test_p_tuning_a_frozen_t5(tmp_path, data):
    """T5: the encoder input without the answer plus <extra_id_0>, the decoder <bos> <extra_id_0> answer <eos>.
    This T5 base carries its skill over to the new format unprompted (exact match 1.0 without prompts), so the
    test asks what prompts must not break: the base frozen, the validation loss falling, the answers right."""
    base = make_base(tmp_path / "t5base", "t5", pretrain_steps=250)
    result, model = learn(base, tmp_path / "run", data["train"], "trainer.max_steps=80",
                          f"model.data.validation_ds=[{data['test']}]", "trainer.val_check_interval=80",
                          config="t5/squad")
    assert_base_unchanged(model, base)
    assert result.final_val_loss < result.initial_val_loss
    tokens, with_prompts = generations(base, result.output, data["test"], family="t5")
    assert with_prompts >= 0.5
    print(f"t5 p-tuning: val loss {result.initial_val_loss:.3f} -> {result.final_val_loss:.3f}, "
          f"exact match {with_prompts:.3f}")


def test_examples_truncate_only_the_truncate_field_else_skip(tmp_path):
    from prompt_helpers import write_vocab

    from bignlp_models.prompt_template import PromptTemplate, Roles, encode_example
    from bignlp_tokenizers import TokenizerSpec, build_tokenizer

    tok = build_tokenizer(TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(write_vocab(tmp_path / "v.txt"))))
    template = PromptTemplate(taskname="t", prompt_template="<|VIRTUAL_PROMPT_0|>context : {context} answer : {answer}",
                              total_virtual_tokens=2, virtual_token_splits=(2,), truncate_field="context", offset=3)
    roles = Roles(eos=tok.eod_id, pad=0)
    row = {"context": "f1 f2 f3 f4 f5 f6", "answer": "k1"}
    full = encode_example(template, row, tok, offset=3, vocab_size=100, family="gpt", roles=roles, max_length=None)
    ids = lambda text: tok.encode(text)  # noqa: E731
    assert full.prompt == [103, 104, *ids("context :"), *ids("f1 f2 f3 f4 f5 f6"), *ids("answer :")]
    assert full.tokens + [full.labels[-1]] == full.prompt + ids("k1") + [tok.eod_id]  # <eos> appended
    assert full.loss_mask == [0] * (len(full.prompt) - 1) + [1, 1]  # answer_only_loss: the answer and <eos>
    cut = encode_example(template, row, tok, offset=3, vocab_size=100, family="gpt", roles=roles,
                         max_length=len(full.tokens) + 1 - 4)
    assert cut.prompt == [103, 104, *ids("context :"), *ids("f1 f2"), *ids("answer :")]  # the context's end cut
    assert encode_example(template, row, tok, offset=3, vocab_size=100, family="gpt", roles=roles,
                          max_length=len(full.tokens) + 1 - 7) is None  # more than the context holds: skipped
    no_field = PromptTemplate(**{**template.__dict__, "truncate_field": None})
    assert encode_example(no_field, row, tok, offset=3, vocab_size=100, family="gpt", roles=roles,
                          max_length=len(full.tokens)) is None
    t5 = encode_example(template, row, tok, offset=3, vocab_size=100, family="t5",
                        roles=Roles(eos=3, pad=0, bos=2, sentinel=99), max_length=None)
    assert t5.prompt == [*full.prompt, 99]  # the answer removed, <extra_id_0> appended
    assert (t5.tokens, t5.labels) == ([2, 99, *ids("k1")], [99, *ids("k1"), 3])


def test_too_long_examples_are_truncated_or_skipped_and_counted(gpt_base, data, tmp_path):
    def plan(max_len: int):
        return pl.plan_prompt_learn(load_prompt_config("gpt3/squad", prompt_overrides(
            gpt_base, tmp_path / "run", data["train"], f"model.data.max_seq_length={max_len}")))

    # 4 virtual + "context :" + 7 context tokens + "answer :" + the key + <eos> = 17 tokens
    assert plan(17).skipped["train"] == {"keys": 0} and len(plan(17).train[0].tokens) == 16
    cut = plan(12)  # 5 context tokens cut from every example, none skipped
    assert cut.skipped["train"] == {"keys": 0} and {len(e.tokens) for e in cut.train} == {11}
    mixed = tmp_path / "mixed.jsonl"
    lines = data["train"].read_text().splitlines()[:3]
    long_answer = {"taskname": "keys", "context": "f1", "answer": " ".join(f"k{i}" for i in range(8))}
    mixed.write_text("\n".join([*lines, json.dumps(long_answer)]) + "\n")
    plan12 = pl.plan_prompt_learn(load_prompt_config("gpt3/squad", prompt_overrides(
        gpt_base, tmp_path / "run", mixed, "model.data.max_seq_length=12")))
    assert plan12.skipped["train"] == {"keys": 1} and len(plan12.train) == 3  # 6 too many, 1 context token to cut
    result = _cli(gpt_base, tmp_path / "run", data["train"], "model.data.max_seq_length=9")
    assert_one_line(result, 2, "no usable example", "'keys': 512")


@pytest.mark.parametrize("name", ["gpt3/squad", "t5/squad", "mt5/squad"])
def test_shipped_configs_carry_the_launchers_values(name):
    from bignlp_train.config.prompt import shipped_prompt_configs

    assert name in shipped_prompt_configs()
    m = load_prompt_config(name).model
    squad = m.template("squad")
    assert (m.virtual_prompt_style, squad.total_virtual_tokens, squad.virtual_token_splits) == ("p-tuning", 10, (10,))
    assert (squad.truncate_field, squad.answer_only_loss, squad.fields) == ("context", True,
                                                                           ["context", "question", "answer"])
    assert (m.p_tuning.dropout, m.p_tuning.num_layers, m.optim.lr, m.optim.sched.warmup_steps,
            m.optim.sched.constant_steps, m.optim.sched.min_lr) == (0.0, 2, 2e-4, 50, 10, 0.0)
    assert (m.global_batch_size, m.micro_batch_size, load_prompt_config(name).trainer.max_epochs) == (64, 8, 4)
