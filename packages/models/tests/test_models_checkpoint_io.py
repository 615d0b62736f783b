"""open_checkpoint (read a few tensors at a time) and save_model_checkpoint (a weights-only checkpoint), what
converters stream with; and the exact-erf GeLU option a converted model may need."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed.checkpoint as dcp
from test_models_checkpoint import CFG, VOCAB, save_checkpoint
from test_models_t5 import build, v11_config

from bignlp_contracts import Producer, read_checkpoint
from bignlp_models import GPT_SPEC, T5_SPEC, build_model, load_model, open_checkpoint, save_model_checkpoint
from bignlp_models.layers import MLP

PRODUCER = Producer("bignlp-models-tests", "0")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    return build_model(CFG).eval()


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("run"), trained)


def test_reader_reads_only_the_tensors_asked_for(checkpoint, trained, monkeypatch):
    reader = open_checkpoint(checkpoint)
    assert reader.family is GPT_SPEC and reader.vocab_size == VOCAB and reader.padded_vocab_size == CFG.vocab_size
    shapes = reader.shapes
    assert set(shapes) == set(trained.state_dict())
    assert shapes["embedding.word_embeddings.weight"][0] == (VOCAB, CFG.hidden_size)  # unpadded
    read = []
    original = dcp.FileSystemReader.read_data

    def spy(self, plan, planner):
        read.extend(item.storage_index.fqn for item in plan.items)
        return original(self, plan, planner)

    monkeypatch.setattr(dcp.FileSystemReader, "read_data", spy)
    names = [n for n in shapes if n.startswith("layers.1.")]
    got = reader.read(names, dtype=torch.float64)
    assert sorted(read) == sorted("model." + n for n in names)
    for name in names:
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(got[name], trained.state_dict()[name].double(), rtol=0, atol=0)
    emb = reader.read(["embedding.word_embeddings.weight"])["embedding.word_embeddings.weight"]
    assert torch.equal(emb, trained.embedding.word_embeddings.weight[:VOCAB])
    assert reader.tokenizer().vocab_size == VOCAB
    with pytest.raises(KeyError, match="no weight 'layers.9.x'"):
        reader.read(["layers.9.x"])


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_saved_weights_only_checkpoint_loads_as_the_model(family, checkpoint, trained, tmp_path):
    tokenizer = open_checkpoint(checkpoint).tokenizer()
    if family == "gpt":
        spec, cfg, model = GPT_SPEC, CFG, trained
        tokens = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
        run = {"hidden_size": CFG.hidden_size}
    else:
        spec, cfg = T5_SPEC, v11_config(vocab_size=CFG.vocab_size)
        model = build(cfg).eval()
        tokens = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
        run = {}
    out = save_model_checkpoint(tmp_path / "ckpt", family=spec, config=cfg, state_dict=model.state_dict(),
                                tokenizer=tokenizer, producer=PRODUCER, summary={"source": "test"},
                                run_config=run)
    path, manifest = read_checkpoint(out, verify="sha256")
    assert manifest.summary["family"] == family and manifest.summary["vocab_size"] == VOCAB
    assert manifest.summary["padded_vocab_size"] == cfg.vocab_size and manifest.summary["source"] == "test"
    assert not list(tmp_path.glob(".ckpt*"))  # no temporary directory left
    loaded = load_model(out)
    assert loaded.config == dataclasses.replace(cfg, vocab_size=VOCAB)
    with torch.no_grad():
        if family == "gpt":
            want, got = model(tokens)[..., :VOCAB], loaded.model(tokens)
        else:
            want = model(tokens, decoder_tokens=tokens)[..., :VOCAB]
            got = loaded.model(tokens, decoder_tokens=tokens)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_save_refuses_a_state_dict_that_does_not_fit(checkpoint, trained, tmp_path):
    tokenizer = open_checkpoint(checkpoint).tokenizer()
    sd = dict(trained.state_dict())
    sd.pop("final_layernorm.bias")
    with pytest.raises(ValueError, match="missing \\['final_layernorm.bias'\\]"):
        save_model_checkpoint(tmp_path / "a", family=GPT_SPEC, config=CFG, state_dict=sd, tokenizer=tokenizer,
                              producer=PRODUCER)
    sd = dict(trained.state_dict())
    sd["final_layernorm.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="final_layernorm.bias is \\[3\\]"):
        save_model_checkpoint(tmp_path / "b", family=GPT_SPEC, config=CFG, state_dict=sd, tokenizer=tokenizer,
                              producer=PRODUCER)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("activation", ["gelu", "geglu"])
def test_erf_gelu_option(activation):
    shape = dataclasses.make_dataclass("S", ["hidden_size", "ffn_hidden_size"])(8, 16)
    torch.manual_seed(0)
    tanh = MLP(shape, activation=activation)
    erf = MLP(shape, activation=activation, gelu_approximation="none")
    erf.load_state_dict(tanh.state_dict())
    x = torch.randn(4, 8) * 3
    h = tanh.linear_fc1(x)
    gate = torch.nn.functional.gelu(h)  # exact
    want = tanh.linear_fc2(gate if activation == "gelu" else gate * tanh.linear_fc1_2(x))
    torch.testing.assert_close(erf(x), want, rtol=0, atol=0)
    assert not torch.equal(tanh(x), erf(x))
    with pytest.raises(ValueError, match="gelu_approximation 'fast'"):
        MLP(shape, gelu_approximation="fast")
    gpt = build_model(dataclasses.replace(CFG, gelu_approximation="none"))
    assert gpt.layers["0"].mlp.gelu_approximation == "none"
