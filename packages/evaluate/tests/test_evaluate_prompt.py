"""bignlp-evaluate prompt: a prompt checkpoint (written here with bignlp_models, as prompt-learn writes it) on
test JSONL, for GPT and T5; SQuAD scoring; the base pin; one-line refusals with no artifact left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bignlp_contracts import Producer, read_manifest
from bignlp_evaluate.cli import main
from bignlp_evaluate.prompt import squad_scores
from bignlp_models.prompt import base_record, save_prompt_checkpoint

TEMPLATE = "<|VIRTUAL_PROMPT_0|> Context: {context} <|VIRTUAL_PROMPT_1|> Answer: {answer}"


def make_prompts(out: Path, base: Path, *, hidden: int, seed: int = 0, truncate_field: str | None = "context") -> Path:
    torch.manual_seed(seed)
    task = {"taskname": "squad", "prompt_template": TEMPLATE, "total_virtual_tokens": 5,
            "virtual_token_splits": [3, 2], "answer_only_loss": True, "answer_field": "answer",
            "truncate_field": truncate_field, "offset": 0, "virtual_prompt_style": "p-tuning", "max_new_tokens": 4}
    save_prompt_checkpoint(out, rows=torch.randn(5, hidden) * 3, tasks=[task], base=base_record(base),
                           producer=Producer("test", "0"))
    return out


def write_data(path: Path, answers: list[str] | None = None) -> Path:
    contexts = ["the cat sat on the mat", "paris is in france", "one two three four", "red green blue"]
    answers = answers or ["mat", "france", "four", "blue"]
    path.write_text("".join(json.dumps({"taskname": "squad", "context": c, "answer": a}) + "\n"
                            for c, a in zip(contexts, answers)))
    return path


def run(*args: str):
    return CliRunner().invoke(main, ["prompt", *args, "--device", "cpu"])


def test_squad_scores_as_the_official_script():
    assert squad_scores(["Paris."], [["paris"]]) == {"exact_match": 100.0, "f1": 100.0}  # normalised
    assert squad_scores(["the big cat"], [["big dog"]])["f1"] == pytest.approx(50.0)  # articles dropped
    assert squad_scores(["x", "mat"], [["y"], ["a", "mat"]]) == {"exact_match": 50.0, "f1": 50.0}  # best gold


def test_gpt_prompts_scored_and_virtual_tokens_matter(gpt_checkpoint, tmp_path):
    prompts = make_prompts(tmp_path / "prompts", gpt_checkpoint, hidden=32)
    data = write_data(tmp_path / "test.jsonl")
    result = run("--prompt-checkpoint", str(prompts), "--data", str(data), "--output", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "ev", "evaluation")
    assert manifest.summary["tasks"] == ["squad"] and manifest.summary["family"] == "gpt"
    assert [i["kind"] for i in manifest.inputs[:2]] == ["prompt-checkpoint", "model-checkpoint"]
    preds = [p["prediction"] for p in json.loads((tmp_path / "ev" / "results.json").read_text())["predictions"]]
    assert len(preds) == 4
    # the model's own answers as the gold ones: every line exact
    write_data(tmp_path / "own.jsonl", preds)
    result = run("--prompt-checkpoint", str(prompts), "--data", str(tmp_path / "own.jsonl"), "--output",
                 str(tmp_path / "ev2"))
    assert result.exit_code == 0, result.output
    scores = read_manifest(tmp_path / "ev2", "evaluation").summary["metrics"]["squad"]
    assert scores == {"exact_match": 100.0, "f1": 100.0}
    result = run("--prompt-checkpoint", str(prompts), "--data", str(tmp_path / "own.jsonl"), "--output",
                 str(tmp_path / "ev3"), "--disable-virtual-tokens")
    assert result.exit_code == 0, result.output
    off = json.loads((tmp_path / "ev3" / "results.json").read_text())
    assert off["disable_virtual_tokens"] is True
    assert [p["prediction"] for p in off["predictions"]] != preds  # prompts of std 3 change the greedy answers
    assert "| squad | exact_match |" in (tmp_path / "ev2" / "results.md").read_text()


def t5_base(out: Path) -> Path:
    from bignlp_models import T5_SPEC, T5Config, save_model_checkpoint
    from bignlp_tokenizers import TokenizerSpec, build_tokenizer

    vocab = out.parent / "t5vocab.txt"
    words = ["the", "cat", "sat", "on", "mat", "paris", "is", "in", "france", "one", "two", "three", "four", "red",
             "green", "blue", "context", "answer", ":"]
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = build_tokenizer(TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(vocab), num_sentinel_tokens=3))
    cfg = T5Config(vocab_size=128, hidden_size=32, num_attention_heads=4, kv_channels=8, encoder_num_layers=1,
                   decoder_num_layers=1, encoder_ffn_hidden_size=64, decoder_ffn_hidden_size=64,
                   max_position_embeddings=64)
    torch.manual_seed(0)
    model = T5_SPEC.model_class(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    save_model_checkpoint(out, family=T5_SPEC, config=cfg, state_dict=model.state_dict(), tokenizer=tok,
                          producer=Producer("test", "0"))
    return out


def test_t5_prompts(tmp_path):
    base = t5_base(tmp_path / "t5")
    prompts = make_prompts(tmp_path / "prompts", base, hidden=32)
    data = write_data(tmp_path / "test.jsonl")
    result = run("--prompt-checkpoint", str(prompts), "--data", str(data), "--output", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    summary = read_manifest(tmp_path / "ev", "evaluation").summary
    assert summary["family"] == "t5" and set(summary["metrics"]["squad"]) == {"exact_match", "f1"}


def test_lines_too_long_are_skipped_and_counted_as_training_skips_them(tmp_path):
    base = t5_base(tmp_path / "t5")  # 64 positions
    prompts = make_prompts(tmp_path / "prompts", base, hidden=32, truncate_field=None)
    data = write_data(tmp_path / "test.jsonl")
    with data.open("a") as f:
        f.write(json.dumps({"taskname": "squad", "context": " ".join(["red green blue"] * 40), "answer": "x"}) + "\n")
    result = run("--prompt-checkpoint", str(prompts), "--data", str(data), "--output", str(tmp_path / "ev"))
    assert result.exit_code == 0, result.output
    assert "skipped 1 line(s) longer than the model takes" in result.output and "test.jsonl:5" in result.output
    assert read_manifest(tmp_path / "ev", "evaluation").summary["skipped_too_long"] == 1
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert len(results["predictions"]) == 4 and results["skipped"] == [f"{data}:5"]
    out = tmp_path / "all"
    data.write_text(data.read_text().splitlines(keepends=True)[-1])
    result = run("--prompt-checkpoint", str(prompts), "--data", str(data), "--output", str(out))
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 4 and last.startswith("bignlp-evaluate: ") and "every line is longer" in last
    assert "Traceback" not in result.output and not (out / "manifest.json").exists()


def _refused(result, code: int, needle: str, output: Path) -> None:
    assert result.exit_code == code, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("bignlp-evaluate: ") and needle in first and "Traceback" not in result.output, first
    assert not (output / "manifest.json").exists()


def test_refusals(gpt_checkpoint, tmp_path):
    from evaluate_helpers import make_checkpoint

    prompts = make_prompts(tmp_path / "prompts", gpt_checkpoint, hidden=32)
    data = write_data(tmp_path / "test.jsonl")
    out = tmp_path / "ev"
    other = make_checkpoint(tmp_path / "other", "gpt", seed=1)  # same tokenizer, other weights
    _refused(run("--prompt-checkpoint", str(prompts), "--data", str(data), "--output", str(out), "--base", str(other)),
             3, "pins base manifest sha256", out)
    _refused(run("--prompt-checkpoint", str(prompts), "--data", str(data), "--output", str(out), "--base",
                 str(t5_base(tmp_path / "t5"))), 3, "another tokenizer", out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"taskname": "squad", "question": "q", "answer": "a"}) + "\n")
    _refused(run("--prompt-checkpoint", str(prompts), "--data", str(bad), "--output", str(out)), 4,
             "bad.jsonl:1: task 'squad': prompt_template field {context} is not in the data", out)
    bad.write_text(json.dumps({"taskname": "boolq", "context": "c", "answer": "a"}) + "\n")
    _refused(run("--prompt-checkpoint", str(prompts), "--data", str(bad), "--output", str(out)), 4,
             "task 'boolq' is not in the prompt checkpoint", out)
    _refused(run("--prompt-checkpoint", str(tmp_path), "--data", str(data), "--output", str(out)), 3,
             "manifest.json is missing", out)


def test_help():
    result = CliRunner().invoke(main, ["prompt", "--help"])
    assert result.exit_code == 0 and "--disable-virtual-tokens" in result.output and "Example:" in result.output
