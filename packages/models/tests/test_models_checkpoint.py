"""load_model: checkpoints laid out exactly as bignlp-train writes them, loaded weights-only for inference."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from bignlp_contracts import (
    GPT_CHECKPOINT,
    MEGATRON_DATASET,
    MODEL_CHECKPOINT,
    ArtifactError,
    ConfigError,
    Producer,
    checkpoint_dir_name,
    set_latest_checkpoint,
    write_manifest,
)
from bignlp_models import GPTConfig, build_model, get_family, load_model, load_state_dict_only
from bignlp_models.placement import plan_placement, resolve_devices

GPT2 = Path(__file__).resolve().parents[3] / "tests" / "data" / "gpt2"
VOCAB = 50257  # GPT-2's tokenizer
CFG = GPTConfig(vocab_size=50304, max_position_embeddings=32, num_layers=3, hidden_size=32, num_attention_heads=4,
                ffn_hidden_size=64, kv_channels=8, hidden_dropout=0.0, attention_dropout=0.0)
HOW = "bignlp-train pretrain --config"


def save_checkpoint(run_dir: Path, model: torch.nn.Module, *, step: int = 4, kind=MODEL_CHECKPOINT,
                    summary: dict | None = None, model_sd: dict | None = None) -> Path:
    """What bignlp-train's save_checkpoint writes, in one process without a process group."""
    path = run_dir / "checkpoints" / checkpoint_dir_name(step)
    path.mkdir(parents=True)
    state = {
        "model": model.state_dict() if model_sd is None else model_sd,
        "optim": {f"state.{name}.exp_avg": torch.full_like(p, 7.0) for name, p in model.named_parameters()},
        "train_state": {"step": step, "consumed_samples": 4 * step},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=path / "dcp")
    (path / "config.yaml").write_text("model:\n  tokenizer:\n    vocab_size: null\n")
    (path / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / name, path / "tokenizer" / name)
    tokenizer = {"type": "gpt2-bpe", "vocab_file": "tokenizer/vocab.json", "merges_file": "tokenizer/merges.txt",
                 "vocab_size": VOCAB, "eod_id": VOCAB - 1}
    if summary is None:
        summary = {"family": "gpt", "vocab_size": VOCAB}
        if kind is GPT_CHECKPOINT:
            summary = {}
    summary = {"step": step, "padded_vocab_size": CFG.vocab_size, "num_parameters": 0,
               "model": {k: getattr(CFG, k) for k in CFG.__dataclass_fields__}, "tokenizer": tokenizer, **summary}
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    write_manifest(path, kind, producer=Producer("bignlp-train", "0.6.0"), files=files, summary=summary,
                   config={"model": {"tokenizer": {"vocab_size": None}}})
    set_latest_checkpoint(run_dir, path)
    return path


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CFG).eval()


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("run"), trained)


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def reference_logits(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)[..., :VOCAB]


def test_logits_equal_the_trained_model_on_real_vocabulary(checkpoint, trained, tokens):
    loaded = load_model(checkpoint)
    assert loaded.path == checkpoint and loaded.family is get_family("gpt")
    assert loaded.vocab_size == VOCAB and loaded.config.vocab_size == VOCAB
    assert loaded.model.embedding.word_embeddings.weight.shape == (VOCAB, CFG.hidden_size)
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.manifest.summary["step"] == 4
    assert loaded.tokenizer.vocab_size == VOCAB and loaded.tokenizer.encode("Hello world") == [15496, 995]
    with torch.no_grad():
        logits = loaded.model(tokens)
    assert logits.shape == (2, 12, VOCAB)
    torch.testing.assert_close(logits, reference_logits(trained, tokens), rtol=1e-5, atol=1e-5)


def test_reads_model_entries_only(checkpoint, monkeypatch):
    import bignlp_models.checkpoint as ckpt_module

    read = []
    original_dcp, original_direct = dcp.FileSystemReader.read_data, ckpt_module.read_direct

    def spy_dcp(self, plan, planner):
        read.extend(item.dest_index.fqn for item in plan.items)
        return original_dcp(self, plan, planner)

    def spy_direct(dcp_dir, saved, storage, tensors):
        read.extend(tensors)
        return original_direct(dcp_dir, saved, storage, tensors)

    monkeypatch.setattr(dcp.FileSystemReader, "read_data", spy_dcp)
    monkeypatch.setattr(ckpt_module, "read_direct", spy_direct)
    load_model(checkpoint)
    assert read and all(fqn.startswith("model.") for fqn in read), sorted(set(read))


def test_legacy_gpt_checkpoint_loads(trained, tmp_path, tokens):
    path = save_checkpoint(tmp_path, trained, kind=GPT_CHECKPOINT)
    loaded = load_model(path)
    assert loaded.manifest.kind == "gpt-checkpoint" and loaded.family.name == "gpt" and loaded.vocab_size == VOCAB
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), reference_logits(trained, tokens), rtol=1e-5, atol=1e-5)


def test_run_directory_means_its_latest_checkpoint(trained, tmp_path, tokens):
    torch.manual_seed(5)
    save_checkpoint(tmp_path, build_model(CFG), step=2)
    latest = save_checkpoint(tmp_path, trained, step=6)
    loaded = load_model(tmp_path)
    assert loaded.path == latest and loaded.manifest.summary["step"] == 6
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), reference_logits(trained, tokens), rtol=1e-5, atol=1e-5)


def test_tied_weight_saved_under_its_copys_name(trained, tmp_path, tokens):
    sd = dict(trained.state_dict())
    sd["output_layer.weight"] = sd.pop("embedding.word_embeddings.weight")
    loaded = load_model(save_checkpoint(tmp_path, trained, model_sd=sd))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), reference_logits(trained, tokens), rtol=1e-5, atol=1e-5)


def test_bfloat16(checkpoint, trained, tokens):
    loaded = load_model(checkpoint, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        logits = loaded.model(tokens)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference_logits(trained, tokens), rtol=0.05, atol=0.05)


def test_two_cpu_devices_equal_one(checkpoint, tokens):
    one = load_model(checkpoint)
    two = load_model(checkpoint, devices=["cpu", "cpu"])
    assert two.devices == (torch.device("cpu"), torch.device("cpu"))
    copy, weight = two.model.output_layer.weight, two.model.embedding.word_embeddings.weight
    assert copy is not weight and torch.equal(copy, weight)  # the last device's own copy of the tied weight
    with torch.no_grad():
        assert torch.equal(two.model(tokens), one.model(tokens))


def test_placement_plan():
    spec = get_family("gpt")
    plan, added = plan_placement(spec.build_meta(CFG), spec, 2)
    assert plan == {"embedding": 0, "layers.0": 0, "layers.1": 0, "layers.2": 1, "final_layernorm": 1,
                    "output_layer": 1}
    assert set(added) == {"output_layer"}
    plan, _ = plan_placement(spec.build_meta(CFG), spec, 3)
    assert [plan[f"layers.{i}"] for i in range(3)] == [0, 1, 2]
    with pytest.raises(ConfigError, match="4 devices for a model of 3 layers"):
        plan_placement(spec.build_meta(CFG), spec, 4)
    if not torch.cuda.is_available():
        assert resolve_devices("auto") == (torch.device("cpu"),)


def test_kv_cache_decoding_over_two_devices(checkpoint, tokens):
    from bignlp_models import layers

    if not hasattr(layers, "KVCache"):
        pytest.skip("no KV cache in this bignlp-models")
    one, two = load_model(checkpoint), load_model(checkpoint, devices=["cpu", "cpu"])
    cache = layers.KVCache(tokens.shape[0], tokens.shape[1])
    with torch.no_grad():
        full = one.model(tokens)
        steps = [two.model(tokens[:, :8], cache=cache)] + [two.model(tokens[:, i:i + 1], cache=cache)
                                                            for i in range(8, tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


def test_state_dict_only(checkpoint, trained):
    sd, manifest = load_state_dict_only(checkpoint)
    assert manifest.kind == "model-checkpoint"
    assert set(sd) == set(trained.state_dict())
    assert sd["embedding.word_embeddings.weight"].shape == (VOCAB, CFG.hidden_size)
    assert torch.equal(sd["embedding.word_embeddings.weight"], trained.embedding.word_embeddings.weight[:VOCAB])
    padded, _ = load_state_dict_only(checkpoint, unpad=False, dtype=torch.bfloat16)
    assert padded["embedding.word_embeddings.weight"].shape == (CFG.vocab_size, CFG.hidden_size)
    assert padded["layers.0.mlp.linear_fc1.weight"].dtype == torch.bfloat16


# --- bad input: one line, exit code 3, what is wrong and how to make a checkpoint ---------------------------


def one_line_error(path, *needles: str) -> str:
    with pytest.raises(ArtifactError) as exc:
        load_model(path)
    line = exc.value.one_line()
    assert exc.value.exit_code == 3 and "\n" not in line
    for needle in (*needles, HOW):
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def test_not_a_checkpoint(tmp_path):
    one_line_error(tmp_path, "manifest.json is missing")
    (tmp_path / "config.yaml").write_text("{}\n")  # a run directory that never checkpointed
    (tmp_path / "metrics.jsonl").write_text("")
    one_line_error(tmp_path, "manifest.json is missing")
    (tmp_path / "checkpoints" / ".step-00000004.tmp").mkdir(parents=True)
    one_line_error(tmp_path, "no complete checkpoint yet")


def test_dataset_artifact_is_named(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"")
    write_manifest(tmp_path, MEGATRON_DATASET, producer=Producer("bignlp-dataprep", "0"), files=["x.bin"])
    one_line_error(tmp_path, "'megatron-dataset' artifact, not a model checkpoint")


def test_half_written(checkpoint, tmp_path):
    torn = tmp_path / "checkpoints" / ".step-00000004.tmp"
    shutil.copytree(checkpoint, torn)
    (torn / "manifest.json").unlink()
    one_line_error(torn, "save in progress")
    no_meta = tmp_path / "no-meta"
    shutil.copytree(checkpoint, no_meta)
    (no_meta / "dcp" / ".metadata").unlink()
    one_line_error(no_meta, "missing required file dcp/.metadata")


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF  # same size, other content
    path.write_bytes(data)


@pytest.mark.parametrize("victim", ["dcp/__0_0.distcp", "dcp/.metadata", "tokenizer/vocab.json"])
def test_files_it_reads_must_match_their_sha256(checkpoint, tmp_path, tokens, victim):
    damaged = tmp_path / "step"
    shutil.copytree(checkpoint, damaged)
    _flip(damaged / victim, (damaged / victim).stat().st_size // 2)
    with pytest.raises(ArtifactError) as exc:
        load_model(damaged)
    line = exc.value.one_line()
    assert line.startswith(f"{damaged}: file {victim} does not match its sha256 in the manifest (corrupt)"), line
    assert "verify='size'" in line and exc.value.exit_code == 3
    with pytest.raises(ArtifactError, match=f"file {victim} does not match"):
        load_state_dict_only(damaged)
    if victim == "dcp/__0_0.distcp":  # told to trust the files, it loads the flipped weight without a word
        assert load_model(damaged, verify="size").vocab_size == VOCAB


def test_sha256_covers_only_what_it_reads(checkpoint, tmp_path):
    other = tmp_path / "step"
    shutil.copytree(checkpoint, other)
    _flip(other / "config.yaml", 0)  # listed in the manifest, never read by load_model: its size still is
    load_model(other)
    with pytest.raises(ValueError, match="verify='md5'"):
        load_model(other, verify="md5")


def test_unknown_family(trained, tmp_path):
    path = save_checkpoint(tmp_path, trained, summary={"family": "t9", "vocab_size": VOCAB})
    one_line_error(path, "summary.family 't9' is not a model family", "gpt")


def test_missing_model_tensors(trained, tmp_path):
    sd = {k: v for k, v in trained.state_dict().items() if not k.startswith("layers.2.")}
    path = save_checkpoint(tmp_path, trained, model_sd=sd)
    one_line_error(path, "dcp/ has no model tensor model.layers.2.", "missing")


def test_wrong_shapes(tmp_path):
    torch.manual_seed(0)
    other = build_model(GPTConfig(**{**vars(CFG), "ffn_hidden_size": 48}))
    path = save_checkpoint(tmp_path, other)
    line = one_line_error(path, "dcp/ does not fit summary.model")
    assert "model.layers.0.mlp.linear_fc1.weight is [48, 32], summary.model makes it [64, 32]" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_and_cpu_placement_equal_cpu(checkpoint, tokens):
    cpu = load_model(checkpoint)
    with torch.no_grad():
        expected = cpu.model(tokens)
        for devices in (["cuda:0"], ["cuda:0", "cpu"], ["cpu", "cuda:0"]):
            placed = load_model(checkpoint, devices=devices)
            logits = placed.model(tokens)
            assert logits.device == tokens.device  # back where the tokens came from
            assert placed.model(tokens.cuda()).device.type == "cuda"
            torch.testing.assert_close(logits.cpu(), expected, rtol=1e-3, atol=1e-3)
        bf16 = load_model(checkpoint, device="cuda", dtype=torch.bfloat16)
        assert bf16.model(tokens.cuda()).dtype == torch.bfloat16


def test_manifest_summary_matches_what_train_writes(checkpoint):
    summary = json.loads((checkpoint / "manifest.json").read_text())["summary"]
    assert {"family", "vocab_size", "padded_vocab_size", "model", "tokenizer", "step"} <= set(summary)
