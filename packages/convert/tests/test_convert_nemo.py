"""bignlp-convert to-nemo / from-nemo: NeMo 1.x layout rules, bit-exact round trips at any layout, refusals."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from convert_helpers import make_checkpoint

from bignlp_contracts import read_manifest
from bignlp_convert.cli import main
from bignlp_convert.nemo import from_nemo, to_nemo
from bignlp_convert.torchzip import TorchSaveWriter
from bignlp_models import load_model, open_checkpoint

GPT_LAYERS = {"num_layers": 4}


def archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def weights(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), weights_only=True)


def same_weights(a: Path, b: Path) -> None:
    ra, rb = open_checkpoint(a), open_checkpoint(b)
    assert sorted(ra.shapes) == sorted(rb.shapes)
    names = list(ra.shapes)
    ta, tb = ra.read(names), rb.read(names)
    for name in names:
        assert torch.equal(ta[name], tb[name]), name


def logits(ckpt: Path, kind: str, vocab: int) -> torch.Tensor:
    model = load_model(ckpt).model
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, vocab, (2, 10), generator=g), torch.randint(0, vocab, (2, 6), generator=g)
    with torch.no_grad():
        return (model(x) if kind == "gpt" else model(x, decoder_tokens=y))[..., :vocab]


@pytest.mark.parametrize("kind", ["gpt", "t5", "mt5"])
def test_round_trip_through_tp2_pp2_is_bit_exact(tmp_path, kind):
    ckpt, _, tok = make_checkpoint(tmp_path / "ckpt", kind, **(GPT_LAYERS if kind == "gpt" else {}))
    lines = []
    nemo = to_nemo(ckpt, tmp_path / "nemo" / "model.nemo", tensor_model_parallel_size=2,
                   pipeline_model_parallel_size=2, log=lines.append)
    assert any("GB in" in line for line in lines)
    summary = read_manifest(tmp_path / "nemo", "nemo-archive").summary
    assert (summary["tensor_model_parallel_size"], summary["pipeline_model_parallel_size"]) == (2, 2)
    from_nemo(nemo, tmp_path / "back")
    same_weights(ckpt, tmp_path / "back")
    torch.testing.assert_close(logits(tmp_path / "back", kind, tok.vocab_size), logits(ckpt, kind, tok.vocab_size),
                               rtol=0, atol=0)


def _merge(members: dict[str, bytes], tp: int, pp: int, layers_per_stage: int) -> dict[str, torch.Tensor]:
    """The test's own reading of FACTS.md's rules: TP pieces joined along dim 0 (QKV, h_to_4h, word embeddings)
    or -1 (dense, 4h_to_h weights), others equal on every rank; stage-local layer numbers made global."""
    merged: dict[str, torch.Tensor] = {}
    for pp_rank in range(pp):
        ranks = [weights(members[f"./tp_rank_{r:02d}_pp_rank_{pp_rank:03d}/model_weights.ckpt"]) for r in range(tp)]
        for key in ranks[0]:
            pieces = [r[key] for r in ranks]
            if re.search(r"(query_key_value|dense_h_to_4h)\.(weight|bias)$|word_embeddings\.weight$", key):
                t = torch.cat(pieces, 0)
            elif re.search(r"(self_attention\.dense|dense_4h_to_h)\.weight$", key):
                t = torch.cat(pieces, -1)
            else:
                assert all(torch.equal(p, pieces[0]) for p in pieces), key
                t = pieces[0]
            offset = pp_rank * layers_per_stage
            key = re.sub(r"layers\.(\d+)\.", lambda m, o=offset: f"layers.{int(m.group(1)) + o}.", key)
            if key in merged:  # the last stage's tied copy of the embedding
                assert torch.equal(merged[key], t)
            merged[key] = t
    return merged


def test_gpt_archive_follows_nemo_layout_and_tp2_pp2_equals_tp1_pp1(tmp_path):
    ckpt, _, tok = make_checkpoint(tmp_path / "ckpt", "gpt", **GPT_LAYERS)
    one = archive(to_nemo(ckpt, tmp_path / "a" / "m.nemo"))
    four = archive(to_nemo(ckpt, tmp_path / "b" / "m.nemo", tensor_model_parallel_size=2,
                           pipeline_model_parallel_size=2))
    assert all(name.startswith("./") for name in [*one, *four])
    assert {n for n in one if n.endswith(".ckpt")} == {"./model_weights.ckpt"}
    assert {n for n in four if n.endswith(".ckpt")} == {
        f"./tp_rank_{t:02d}_pp_rank_{p:03d}/model_weights.ckpt" for t in range(2) for p in range(2)}
    cfg = yaml.safe_load(four["./model_config.yaml"])
    for key in ("hidden_size", "max_position_embeddings", "num_layers", "num_attention_heads", "ffn_hidden_size",
                "kv_channels", "apply_query_key_layer_scaling", "init_method_std", "hidden_dropout", "precision",
                "layernorm_epsilon", "make_vocab_size_divisible_by", "megatron_amp_O2", "sequence_parallel"):
        assert key in cfg, key
    assert cfg["tensor_model_parallel_size"] == 2 and cfg["pipeline_model_parallel_size"] == 2
    assert cfg["openai_gelu"] is True  # ours is the tanh GeLU
    for ref in (cfg["tokenizer"]["vocab_file"], cfg["tokenizer"]["merge_file"]):
        assert re.fullmatch(r"nemo:[0-9a-f]{32}_(vocab\.json|merges\.txt)", ref)
        assert "./" + ref.removeprefix("nemo:") in four
    whole = weights(one["./model_weights.ckpt"])
    assert "model.language_model.encoder.layers.3.self_attention.query_key_value.weight" in whole
    assert whole["model.language_model.embedding.word_embeddings.weight"].shape[0] == 50304  # 128 × TP 1
    last = weights(four["./tp_rank_01_pp_rank_001/model_weights.ckpt"])
    assert "model.word_embeddings.weight" in last and "model.language_model.encoder.layers.1.mlp.dense_4h_to_h.weight" \
        in last and "model.language_model.encoder.layers.2.input_layernorm.weight" not in last
    merged = _merge(four, 2, 2, 2)
    merged.pop("model.word_embeddings.weight")
    assert sorted(merged) == sorted(whole)
    for key, t in whole.items():
        m = merged[key]
        if key.endswith("word_embeddings.weight"):  # padded to 128 × TP 2: the extra rows are zeros
            assert torch.equal(m[: t.shape[0]], t) and not m[t.shape[0]:].any()
        else:
            assert torch.equal(m, t), key
    # with TP only: mp_rank_XX
    two = archive(to_nemo(ckpt, tmp_path / "c" / "m.nemo", tensor_model_parallel_size=2))
    assert {n for n in two if n.endswith(".ckpt")} == {"./mp_rank_00/model_weights.ckpt",
                                                       "./mp_rank_01/model_weights.ckpt"}


def test_t5_archive_keys_and_stages(tmp_path):
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", "mt5")
    members = archive(to_nemo(ckpt, tmp_path / "n" / "m.nemo", pipeline_model_parallel_size=2))
    enc, dec = (weights(members[f"./tp_rank_00_pp_rank_{p:03d}/model_weights.ckpt"]) for p in range(2))
    assert "enc_dec_model.encoder_relative_position_embedding.relative_position_embedding.weight" in enc
    assert "enc_dec_model.enc_dec_model.encoder.model.layers.1.mlp.dense_h_to_4h_2.weight" in enc
    assert not any("decoder.model.layers" in k for k in enc)
    assert "enc_dec_model.decoder_embedding.word_embeddings.weight" in dec
    assert "enc_dec_model.enc_dec_model.decoder.model.layers.0.inter_attention.key_value.weight" in dec
    assert "enc_dec_model.enc_dec_model.decoder.model.layers.0.post_inter_attention_layernorm.weight" in dec
    assert "enc_dec_model.tokens_head.weight" in dec
    cfg = yaml.safe_load(members["./model_config.yaml"])
    assert cfg["pipeline_model_parallel_split_rank"] == 1 and cfg["position_embedding_type"] == "relative"
    assert cfg["tokenizer"]["library"] == "sentencepiece" and cfg["tokenizer"]["num_sentinel_tokens"] == 100


def test_independently_built_archive_imports(tmp_path):
    """A TP-2 GPT .nemo written here with torch.save and tarfile from FACTS.md alone."""
    ckpt, model, tok = make_checkpoint(tmp_path / "ckpt", "gpt")
    sd = model.state_dict()
    cfg = model.cfg
    ranks: list[dict[str, torch.Tensor]] = [{}, {}]

    def put(key, t, dim=None):
        for r in range(2):
            ranks[r][key] = t.clone() if dim is None else torch.chunk(t, 2, dim=dim)[r].clone()

    emb = sd["embedding.word_embeddings.weight"][: tok.vocab_size]
    emb = torch.cat([emb, torch.zeros(50432 - tok.vocab_size, cfg.hidden_size)])  # 128 × TP 2
    put("model.language_model.embedding.word_embeddings.weight", emb, 0)
    put("model.language_model.embedding.position_embeddings.weight", sd["embedding.position_embeddings.weight"])
    for i in range(cfg.num_layers):
        o, n = f"layers.{i}.", f"model.language_model.encoder.layers.{i}."
        for ours, nemo, dim in (("input_layernorm", "input_layernorm", None),
                                ("self_attention.linear_qkv", "self_attention.query_key_value", 0),
                                ("pre_mlp_layernorm", "post_attention_layernorm", None),
                                ("mlp.linear_fc1", "mlp.dense_h_to_4h", 0)):
            put(n + nemo + ".weight", sd[o + ours + ".weight"], dim)
            put(n + nemo + ".bias", sd[o + ours + ".bias"], dim)
        for ours, nemo in (("self_attention.linear_proj", "self_attention.dense"),
                           ("mlp.linear_fc2", "mlp.dense_4h_to_h")):
            put(n + nemo + ".weight", sd[o + ours + ".weight"], -1)
            put(n + nemo + ".bias", sd[o + ours + ".bias"])
    put("model.language_model.encoder.final_layernorm.weight", sd["final_layernorm.weight"])
    put("model.language_model.encoder.final_layernorm.bias", sd["final_layernorm.bias"])
    tok_dir = ckpt / "tokenizer"
    config = {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "num_attention_heads": 4,
              "ffn_hidden_size": cfg.ffn_hidden_size, "kv_channels": 16, "max_position_embeddings": 64,
              "encoder_seq_length": 64, "layernorm_epsilon": 1e-5, "make_vocab_size_divisible_by": 128,
              "tensor_model_parallel_size": 2, "pipeline_model_parallel_size": 1, "openai_gelu": True,
              "tokenizer": {"library": "megatron", "type": "GPT2BPETokenizer", "model": None,
                            "vocab_file": "nemo:0123456789abcdef0123456789abcdef_vocab.json",
                            "merge_file": "nemo:fedcba9876543210fedcba9876543210_merges.txt"}}
    nemo = tmp_path / "hand.nemo"
    with tarfile.open(nemo, "w:") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("./model_config.yaml", yaml.safe_dump(config).encode())
        add("./0123456789abcdef0123456789abcdef_vocab.json", (tok_dir / "vocab.json").read_bytes())
        add("./fedcba9876543210fedcba9876543210_merges.txt", (tok_dir / "merges.txt").read_bytes())
        for r in range(2):
            buf = io.BytesIO()
            torch.save(ranks[r], buf)
            add(f"./mp_rank_{r:02d}/model_weights.ckpt", buf.getvalue())
    from_nemo(nemo, tmp_path / "imported")
    torch.testing.assert_close(logits(tmp_path / "imported", "gpt", tok.vocab_size),
                               logits(ckpt, "gpt", tok.vocab_size), rtol=0, atol=0)
    # the same archive gzip-compressed, as NeMo wrote them before 1.7
    (tmp_path / "old.nemo").write_bytes(gzip.compress(nemo.read_bytes()))
    from_nemo(tmp_path / "old.nemo", tmp_path / "old")
    same_weights(tmp_path / "imported", tmp_path / "old")


def test_streamed_torch_save_file_loads_like_torch_save(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(7).bfloat16(), "c": torch.randn(2, 3, 4)[:, 1],
               "empty": torch.zeros(0, 3)}
    w = TorchSaveWriter(tmp_path / "w.ckpt", [(k, v.shape, v.dtype) for k, v in tensors.items()])
    for k, v in tensors.items():
        w.write(k, v)
    w.close()
    for kwargs in ({}, {"mmap": True}):
        got = torch.load(tmp_path / "w.ckpt", weights_only=True, **kwargs)
        assert list(got) == list(tensors) and all(torch.equal(got[k], v) for k, v in tensors.items())
    w = TorchSaveWriter(tmp_path / "x.ckpt", [("a", torch.Size([2]), torch.float32)])
    with pytest.raises(RuntimeError, match="out of step"):
        w.write("a", torch.zeros(3))


def _cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _rewrite(src: Path, dst: Path, *, drop: str | None = None, yaml_edit=None) -> Path:
    with tarfile.open(src) as tin, tarfile.open(dst, "w:") as tout:
        for m in tin.getmembers():
            if drop and m.name == drop:
                continue
            data = tin.extractfile(m).read() if m.isfile() else None
            if m.name == "./model_config.yaml" and yaml_edit:
                y = yaml.safe_load(data)
                yaml_edit(y)
                data = yaml.safe_dump(y).encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    return dst


def test_refusals_are_one_line_and_leave_nothing(tmp_path):
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", "gpt", **GPT_LAYERS)
    res = _cli("to-nemo", "--checkpoint", str(ckpt), "--output", str(tmp_path / "o3" / "m.nemo"), "-t", "3")
    assert res.exit_code == 2 and "--tensor-model-parallel-size 3 does not divide num_attention_heads=4" in res.output
    assert not (tmp_path / "o3").exists()
    res = _cli("to-nemo", "--checkpoint", str(ckpt), "--output", str(tmp_path / "ok" / "m.nemo"), "-t", "2")
    assert res.exit_code == 0, res.output
    good = tmp_path / "ok" / "m.nemo"
    res = _cli("to-nemo", "--checkpoint", str(ckpt), "--output", str(good))
    assert res.exit_code == 2 and "already holds a nemo-archive artifact" in res.output

    cases = {
        "truncated": (lambda p: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), 3,
                      "not a complete .nemo archive"),
        "not-a-tar": (lambda p: p.write_bytes(b"PK\x03\x04 this is not a tar" * 100), 3, "not a complete .nemo"),
        "missing-shard": (lambda p: _rewrite(good, p, drop="./mp_rank_01/model_weights.ckpt"), 3,
                          "mp_rank_01/model_weights.ckpt is missing"),
        "wrong-shape": (lambda p: _rewrite(good, p, yaml_edit=lambda y: y.update(ffn_hidden_size=128)), 3,
                        "model_config.yaml makes it [128, 64]"),
    }
    for name, (make, code, words) in cases.items():
        bad = tmp_path / f"{name}.nemo"
        make(bad)
        res = _cli("from-nemo", "--nemo", str(bad), "--output", str(tmp_path / f"out-{name}"))
        assert res.exit_code == code and words in res.output, (name, res.output)
        assert len(res.output.strip().splitlines()) <= 2, res.output
        assert not (tmp_path / f"out-{name}").exists()


def test_to_nemo_reads_the_launchers_conversion_keys(tmp_path):
    run = tmp_path / "results" / "gpt3_tiny"
    ckpt, _, _ = make_checkpoint(run / "results" / "checkpoints" / "step-00000004", "gpt")
    (run / "results" / "checkpoints" / "latest").write_text("step-00000004\n")
    res = _cli("to-nemo", "--config", "gpt3/convert_gpt3", f"base_results_dir={tmp_path / 'results'}",
               "run.model_train_name=gpt3_tiny", "model.checkpoint_name=step-*", "model.tensor_model_parallel_size=1")
    assert res.exit_code == 0, res.output
    out = run / "convert_nemo" / "megatron_gpt.nemo"
    assert out.is_file() and str(out) in res.output
    assert read_manifest(out.parent, "nemo-archive").inputs[0]["path"] == str(ckpt.resolve())
