"""bignlp-convert to-hf / from-hf: logits against transformers, bit-exact round trips, tokenizer ids, refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from convert_helpers import DATA, make_checkpoint

from bignlp_contracts import read_manifest
from bignlp_convert.cli import main
from bignlp_convert.hf import from_hf, parse_size, to_hf
from bignlp_models import open_checkpoint

transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors.torch")


def texts() -> list[str]:
    with gzip.open(DATA / "corpus" / "demo-multi.jsonl.gz", "rt", encoding="utf-8") as f:
        multi = [json.loads(line)["text"][:400] for _, line in zip(range(12), f)]
    return ["The quick brown fox — 3.14 apples, naïve café!", "  spaces\tand\nnewlines  ", *multi]


def hf_logits(hf_dir: Path, kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "gpt":
        model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
        with torch.no_grad():
            return model(x).logits
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        return model(input_ids=x, decoder_input_ids=y).logits


def our_logits(model, kind: str, x: torch.Tensor, y: torch.Tensor, vocab: int) -> torch.Tensor:
    with torch.no_grad():
        out = model(x) if kind == "gpt" else model(x, decoder_tokens=y)
    return out[..., :vocab]


def inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (2, 12), generator=g), torch.randint(0, vocab, (2, 7), generator=g)


ARCH = {"gpt": "GPT2LMHeadModel", "t5v11": "T5ForConditionalGeneration", "mt5": "MT5ForConditionalGeneration"}


@pytest.mark.parametrize("kind", ["gpt", "t5v11", "mt5"])
def test_export_computes_our_logits_and_tokenizes_alike(tmp_path, kind):
    ckpt, model, tok = make_checkpoint(tmp_path / "ckpt", kind)
    lines = []
    to_hf(ckpt, tmp_path / "hf", log=lines.append)
    assert any("ETA" in line or "GB in" in line for line in lines)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == [ARCH[kind]] and config["vocab_size"] == tok.vocab_size
    manifest = read_manifest(tmp_path / "hf", "hf-model")
    assert manifest.summary["architecture"] == ARCH[kind]
    assert manifest.inputs[0]["kind"] == "model-checkpoint"
    x, y = inputs(tok.vocab_size)
    got = hf_logits(tmp_path / "hf", kind, x, y)
    torch.testing.assert_close(got, our_logits(model, kind, x, y, tok.vocab_size), rtol=0, atol=1e-5)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in texts():
        assert hf_tok(text)["input_ids"] == tok.encode(text, allow_special=True), text
    if kind != "gpt":  # the sentinels keep our ids
        assert hf_tok.convert_tokens_to_ids("<extra_id_0>") == tok.sentinel_ids[0]
        assert hf_tok.convert_tokens_to_ids("<extra_id_99>") == tok.sentinel_ids[99]


@pytest.mark.parametrize("kind", ["gpt", "t5v11", "mt5"])
def test_ours_to_hf_to_ours_is_bit_exact(tmp_path, kind):
    ckpt, model, tok = make_checkpoint(tmp_path / "ckpt", kind)
    to_hf(ckpt, tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "back")
    src, back = open_checkpoint(ckpt), open_checkpoint(tmp_path / "back")
    assert back.padded_vocab_size == src.padded_vocab_size and back.vocab_size == src.vocab_size
    names = list(src.shapes)
    assert sorted(back.shapes) == sorted(names)
    a, b = src.read(names), back.read(names)
    for name in names:
        assert torch.equal(a[name], b[name]), name
    back_tok = back.tokenizer()
    assert back_tok.encode(texts()[2]) == tok.encode(texts()[2])
    assert back_tok.sentinel_ids == tok.sentinel_ids and back_tok.eod_id == tok.eod_id
    to_hf(tmp_path / "back", tmp_path / "again")  # and it goes back as the same class
    assert json.loads((tmp_path / "again" / "config.json").read_text())["architectures"] == [ARCH[kind]]


@pytest.mark.parametrize("kind", ["gpt", "mt5"])
def test_hf_to_ours_to_hf_is_bit_exact(tmp_path, kind):
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", kind)
    to_hf(ckpt, tmp_path / "seed")
    # a model as transformers itself saves it, with other weights
    auto = transformers.AutoModelForCausalLM if kind == "gpt" else transformers.AutoModelForSeq2SeqLM
    hf = auto.from_pretrained(tmp_path / "seed")
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    hf.save_pretrained(tmp_path / "hf")
    transformers.AutoTokenizer.from_pretrained(tmp_path / "seed").save_pretrained(tmp_path / "hf")
    from_hf(tmp_path / "hf", tmp_path / "ours")
    to_hf(tmp_path / "ours", tmp_path / "again")
    want = safetensors.load_file(tmp_path / "hf" / "model.safetensors")
    got = safetensors.load_file(tmp_path / "again" / "model.safetensors")
    tied = {"lm_head.weight"} if kind == "gpt" else {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    assert set(got) == set(want) - tied
    for name, t in got.items():
        assert torch.equal(t, want[name]), name


def test_sharded_export_loads_in_transformers(tmp_path):
    ckpt, model, tok = make_checkpoint(tmp_path / "ckpt", "gpt")
    to_hf(ckpt, tmp_path / "hf", max_shard_size=parse_size("100KB"))
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    for shard in shards:  # at most the size, or a single larger tensor (the embedding)
        names = [n for n, f in index["weight_map"].items() if f == shard]
        assert len(names) == 1 or (tmp_path / "hf" / shard).stat().st_size <= 100_000 + 4096, shard
    x, y = inputs(tok.vocab_size)
    torch.testing.assert_close(hf_logits(tmp_path / "hf", "gpt", x, y), our_logits(model, "gpt", x, y, tok.vocab_size),
                               rtol=0, atol=1e-5)
    from_hf(tmp_path / "hf", tmp_path / "back")  # and sharded files import
    assert open_checkpoint(tmp_path / "back").read(["layers.0.mlp.linear_fc1.weight"])


def test_exact_gelu_exports_as_gelu(tmp_path):
    ckpt, model, tok = make_checkpoint(tmp_path / "ckpt", "gpt", gelu_approximation="none")
    to_hf(ckpt, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["activation_function"] == "gelu"
    x, y = inputs(tok.vocab_size)
    torch.testing.assert_close(hf_logits(tmp_path / "hf", "gpt", x, y), our_logits(model, "gpt", x, y, tok.vocab_size),
                               rtol=0, atol=1e-5)
    from_hf(tmp_path / "hf", tmp_path / "back")
    assert open_checkpoint(tmp_path / "back").config.gelu_approximation == "none"


def test_bfloat16_export(tmp_path):
    ckpt, model, _ = make_checkpoint(tmp_path / "ckpt", "mt5")
    to_hf(ckpt, tmp_path / "hf", dtype="bfloat16")
    got = safetensors.load_file(tmp_path / "hf" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    assert torch.equal(got["decoder.final_layer_norm.weight"], model.decoder_final_layernorm.weight.bfloat16())
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_refusals_are_one_line_and_leave_nothing(tmp_path):
    t5, _, _ = make_checkpoint(tmp_path / "t5", "t5")  # the NeMo launcher's T5: learned absolute positions
    res = _cli("to-hf", "--checkpoint", str(t5), "--output", str(tmp_path / "out"))
    assert res.exit_code == 2 and "position_embedding_type=learned_absolute" in res.output
    assert len(res.output.strip().splitlines()) <= 2 and not (tmp_path / "out").exists()

    res = _cli("to-hf", "--checkpoint", str(t5), "--output", str(tmp_path / "out"), "--max-shard-size", "lots")
    assert res.exit_code == 2 and "--max-shard-size 'lots'" in res.output

    gpt, _, _ = make_checkpoint(tmp_path / "gpt", "gpt")
    assert _cli("to-hf", "--checkpoint", str(gpt), "--output", str(tmp_path / "hf")).exit_code == 0
    res = _cli("to-hf", "--checkpoint", str(gpt), "--output", str(tmp_path / "hf"))
    assert res.exit_code == 2 and "already holds a hf-model artifact" in res.output

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    res = _cli("from-hf", "--hf", str(bert), "--output", str(tmp_path / "b"))
    assert res.exit_code == 2 and "architectures=['BertModel'] is not supported" in res.output
    assert not (tmp_path / "b").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (tmp_path / "hf").iterdir():
        if f.name != "manifest.json":
            (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    res = _cli("from-hf", "--hf", str(broken), "--output", str(tmp_path / "c"))
    assert res.exit_code == 3 and "model.safetensors: not a readable safetensors file" in res.output
    assert not (tmp_path / "c").exists()


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("123") == 123
    assert parse_size("1.5 mb") == 1_500_000
