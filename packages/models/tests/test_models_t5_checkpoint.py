"""load_model for a T5 model-checkpoint written as bignlp-train writes one: one device or several, tied or untied."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_models_checkpoint import VOCAB, save_checkpoint
from test_models_t5 import build, v11_config

from bignlp_models import generate, get_family, load_model, load_state_dict_only
from bignlp_models.placement import plan_placement

PADDED = 50304  # GPT-2's tokenizer (VOCAB = 50257 tokens; save_checkpoint's), padded as Megatron pads it
CONFIGS = {
    # the NeMo launcher's T5: learned absolute positions, LayerNorm with bias, tied head with a per-token bias
    "tied": v11_config(vocab_size=PADDED, position_embedding_type="learned_absolute", max_position_embeddings=32,
                       normalization="layernorm", bias=True, share_decoder_tokens_head_embeddings=True,
                       init_method_std=0.3),
    # T5 v1.1 / mT5: relative position bias, RMSNorm, no bias, an untied head
    "untied": v11_config(vocab_size=PADDED, init_method_std=0.3),
}


def summary(cfg) -> dict:
    """What bignlp-train writes for a T5 (summary.model: the architecture, as dataclasses.asdict gives it)."""
    return {"family": "t5", "vocab_size": VOCAB, "padded_vocab_size": cfg.vocab_size, "model": dataclasses.asdict(cfg)}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def saved(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    model = build(cfg)
    return save_checkpoint(tmp_path_factory.mktemp(request.param), model, summary=summary(cfg)), model, cfg


@pytest.fixture(scope="module")
def inputs() -> dict:
    gen = torch.Generator().manual_seed(1)
    enc, dec = torch.randint(0, VOCAB, (2, 9), generator=gen), torch.randint(0, VOCAB, (2, 6), generator=gen)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 5:] = False
    return dict(enc=enc, dec=dec, mask=mask)


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs["enc"], decoder_tokens=inputs["dec"], encoder_mask=inputs["mask"])


def test_logits_equal_the_saved_model_on_real_vocabulary(saved, inputs):
    path, trained, cfg = saved
    loaded = load_model(path)
    assert loaded.family is get_family("t5") and loaded.vocab_size == VOCAB
    assert loaded.config == dataclasses.replace(cfg, vocab_size=VOCAB)  # bools and strings as saved
    model = loaded.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.encoder_embedding.word_embeddings.weight.shape == (VOCAB, cfg.hidden_size)
    head = model.tokens_head
    if cfg.share_decoder_tokens_head_embeddings:  # padded rows gone from the tied head's bias too
        assert head.weight is None and head.bias.shape == (VOCAB,)
    else:  # and from the untied head's own weight
        assert head.weight.shape == (VOCAB, cfg.hidden_size) and head.bias is None
    got = logits(model, inputs)
    assert got.shape == (2, 6, VOCAB)
    torch.testing.assert_close(got, logits(trained, inputs)[..., :VOCAB], rtol=1e-5, atol=1e-5)


def test_state_dict_only(saved):
    path, trained, cfg = saved
    sd, manifest = load_state_dict_only(path)
    assert manifest.summary["family"] == "t5" and set(sd) == set(trained.state_dict())
    assert torch.equal(sd["encoder_embedding.word_embeddings.weight"],
                       trained.encoder_embedding.word_embeddings.weight[:VOCAB])
    padded, _ = load_state_dict_only(path, unpad=False)
    assert padded["encoder_embedding.word_embeddings.weight"].shape == (PADDED, cfg.hidden_size)


def test_generate_with_the_loaded_model(saved):
    path, trained, _ = saved
    loaded = load_model(path)
    prompts = [[15496, 995, 11], [50256]]
    want = generate(trained, prompts, max_new_tokens=6, greedy=True, vocab_size=VOCAB).tokens
    assert generate(loaded.model, prompts, max_new_tokens=6, greedy=True).tokens == want


@pytest.mark.parametrize("devices", [2, 3])
def test_several_cpu_devices_equal_one(saved, inputs, devices):
    path, _, _ = saved
    one = load_model(path)
    many = load_model(path, devices=["cpu"] * devices)
    assert logits(many.model, inputs).equal(logits(one.model, inputs))
    prompts = [[15496, 995, 11, 7], [50256, 3]]
    kwargs = dict(max_new_tokens=8, temperature=1.0, seed=4)
    assert generate(many.model, prompts, **kwargs).tokens == generate(one.model, prompts, **kwargs).tokens


def test_placement_plan_encoder_then_decoder():
    spec, cfg = get_family("t5"), CONFIGS["tied"]
    plan, added = plan_placement(spec.build_meta(cfg), spec, 2)
    assert plan == {"encoder_embedding": 0, "encoder_layers.0": 0, "encoder_layers.1": 0,
                    "encoder_final_layernorm": 0, "decoder_embedding": 1, "decoder_layers.0": 1,
                    "decoder_layers.1": 1, "decoder_final_layernorm": 1, "tokens_head": 1}
    # the decoder looks its tokens up (and the tied head projects) on device 1: a copy of the shared embedding
    assert set(added) == {"decoder_embedding.word_embeddings"}
    # a device holding the encoder's end and the decoder's start: each module with its own stack's layers
    uneven = dataclasses.replace(cfg, encoder_num_layers=3, decoder_num_layers=1)
    plan, added = plan_placement(spec.build_meta(uneven), spec, 2)
    assert [plan[f"encoder_layers.{i}"] for i in range(3)] + [plan["decoder_layers.0"]] == [0, 0, 1, 1]
    assert plan["encoder_final_layernorm"] == plan["decoder_embedding"] == 1 and plan["encoder_embedding"] == 0
    uneven = dataclasses.replace(cfg, encoder_num_layers=1, decoder_num_layers=3)
    plan, added = plan_placement(spec.build_meta(uneven), spec, 2)
    assert plan["decoder_embedding"] == 0 and plan["decoder_final_layernorm"] == plan["output_layer"] == 1
    assert set(added) == {"output_layer"}  # the embedding is on device 0 already: no copy for the decoder's
    relative = CONFIGS["untied"]
    plan, added = plan_placement(spec.build_meta(relative), spec, 2)
    assert plan["encoder_relative_position_bias"] == 0 and plan["decoder_relative_position_bias"] == 1
    assert set(added) == {"decoder_embedding.word_embeddings"}  # the decoder's token lookup; the head is untied


def test_uneven_stacks_over_two_devices_equal_one(inputs, tmp_path):
    for num_encoder, num_decoder in ((3, 1), (1, 3)):
        cfg = dataclasses.replace(CONFIGS["tied"], encoder_num_layers=num_encoder, decoder_num_layers=num_decoder)
        path = save_checkpoint(tmp_path / f"{num_encoder}{num_decoder}", build(cfg), summary=summary(cfg))
        assert logits(load_model(path, devices=["cpu", "cpu"]).model, inputs).equal(
            logits(load_model(path).model, inputs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_and_cpu_placement_equal_cpu(saved, inputs):
    path, _, _ = saved
    cpu = load_model(path)
    prompts = [[15496, 995, 11, 7], [50256, 3]]
    want = generate(cpu.model, prompts, max_new_tokens=8, greedy=True).tokens
    for devices in (["cuda:0"], ["cuda:0", "cpu"], ["cpu", "cuda:0"]):
        placed = load_model(path, devices=devices)
        got = logits(placed.model, inputs)
        assert got.device == inputs["enc"].device
        torch.testing.assert_close(got, logits(cpu.model, inputs), rtol=1e-3, atol=1e-3)
        assert generate(placed.model, prompts, max_new_tokens=8, greedy=True).tokens == want
