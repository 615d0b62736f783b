"""generate for the T5 encoder-decoder: equal to full forwards, to each prompt alone, and to Hugging Face's generate."""

from __future__ import annotations

import pytest
import torch
from test_models_t5 import V, build, from_hf, hf_model, v11_config

from bignlp_models import GPTConfig, build_model
from bignlp_models.generate import Generation, PromptError, generate, stream_generate

# Encoder inputs of different lengths (11, 7, 3, 1), so the batch is right-padded.
PROMPTS = [[5, 17, 3, 88, 41, 9, 60], [12, 7, 30], [70, 2, 55, 23, 8, 19, 33, 61, 4, 90, 11], [44]]
# init std 0.3: with Megatron's 0.015 a random model mostly repeats one or two tokens
CONFIGS = {
    "v1.1": v11_config(init_method_std=0.3),  # relative position bias, rmsnorm, no bias, geglu, untied head
    "nemo": v11_config(init_method_std=0.3, position_embedding_type="learned_absolute", max_position_embeddings=16,
                       normalization="layernorm", bias=True, share_decoder_tokens_head_embeddings=True,
                       layernorm_epsilon=1e-5),
}


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    return build(CONFIGS[request.param])


@pytest.fixture
def nemo():
    return build(CONFIGS["nemo"])


def greedy_by_full_forwards(model, prompt: list[int], steps: int, start: int = 0) -> list[int]:
    """The reference: argmax of a full forward (encoder and decoder, no cache) per new token, the prompt alone."""
    enc, dec = torch.tensor([prompt]), [start]
    with torch.no_grad():
        for _ in range(steps):
            dec.append(int(model(enc, decoder_tokens=torch.tensor([dec]))[0, -1].argmax()))
    return dec[1:]


def test_greedy_equals_argmax_of_full_forwards(model):
    result = generate(model, PROMPTS, max_new_tokens=10, greedy=True)
    assert isinstance(result, Generation) and result.stop_reasons == ["length"] * len(PROMPTS)
    for prompt, tokens in zip(PROMPTS, result.tokens):
        assert tokens == greedy_by_full_forwards(model, prompt, 10)
    assert len(set(map(tuple, result.tokens))) > 1 and len(set(result.tokens[0])) > 2  # not a degenerate model


def test_decoder_start_token(nemo):
    """Default: pad_id (Hugging Face's start); NeMo's models start from the tokenizer's bos id."""
    assert generate(nemo, PROMPTS, max_new_tokens=6, greedy=True, pad_id=3).tokens == [
        greedy_by_full_forwards(nemo, p, 6, start=3) for p in PROMPTS]
    started = generate(nemo, PROMPTS, max_new_tokens=6, greedy=True, decoder_start_token_id=2).tokens
    assert started == [greedy_by_full_forwards(nemo, p, 6, start=2) for p in PROMPTS]
    assert started != generate(nemo, PROMPTS, max_new_tokens=6, greedy=True).tokens


@pytest.mark.parametrize("kind", ["t5", "mt5"])
def test_greedy_equals_hugging_face_generate(kind):
    cfg = v11_config()
    hf = hf_model(kind, cfg)
    ours = from_hf(hf, cfg)
    free = generate(ours, PROMPTS, max_new_tokens=12, greedy=True).tokens
    eos = free[0][3]  # a token the first row produces: rows stop at it, others run to the length
    longest = max(map(len, PROMPTS))
    enc = torch.tensor([p + [0] * (longest - len(p)) for p in PROMPTS])
    mask = torch.tensor([[1] * len(p) + [0] * (longest - len(p)) for p in PROMPTS])
    with torch.no_grad():
        out = hf.generate(input_ids=enc, attention_mask=mask, max_new_tokens=12, do_sample=False,
                          eos_token_id=eos, pad_token_id=0, decoder_start_token_id=0)
    result = generate(ours, PROMPTS, max_new_tokens=12, greedy=True, stop_token_ids=eos)
    assert out[:, 0].eq(0).all()  # HF's rows begin with the start token; ours hold the new tokens only
    for row, (tokens, reason) in enumerate(zip(result.tokens, result.stop_reasons)):
        want = out[row, 1:].tolist()
        if eos in want:
            want = want[:want.index(eos) + 1]
        assert tokens == want and reason == ("stop" if tokens[-1] == eos else "length")
    assert "stop" in result.stop_reasons and "length" in result.stop_reasons
    assert len(set(map(tuple, free))) > 1 and len(set(free[2])) > 2


def test_same_seed_same_samples_other_seed_differs(model):
    kwargs = dict(max_new_tokens=12, temperature=1.5, top_k=50, top_p=0.95)
    first = generate(model, PROMPTS, seed=1, **kwargs).tokens
    assert generate(model, PROMPTS, seed=1, **kwargs).tokens == first
    assert generate(model, PROMPTS, seed=2, **kwargs).tokens != first
    greedy = generate(model, PROMPTS, max_new_tokens=12, greedy=True).tokens
    assert first != greedy
    assert generate(model, PROMPTS, max_new_tokens=12, top_k=1, seed=3).tokens == greedy
    assert generate(model, PROMPTS, max_new_tokens=12, temperature=0.0).tokens == greedy


def test_stop_token_stops_its_row_only(model):
    full = generate(model, PROMPTS, max_new_tokens=10, greedy=True).tokens
    stop = full[0][3]
    result = generate(model, PROMPTS, max_new_tokens=10, greedy=True, stop_token_ids=[stop])
    for tokens, reason, expected in zip(result.tokens, result.stop_reasons, full):
        if stop in expected:
            assert tokens == expected[:expected.index(stop) + 1] and reason == "stop"
        else:
            assert tokens == expected and reason == "length"
    assert len(result.tokens[0]) < 10 and any(len(t) == 10 for t in result.tokens)


def test_stream_yields_each_step(nemo):
    full = generate(nemo, PROMPTS, max_new_tokens=8, greedy=True, stop_token_ids=90).tokens
    steps = list(stream_generate(nemo, PROMPTS, max_new_tokens=8, greedy=True, stop_token_ids=90))
    assert len(steps) == max(map(len, full))
    for row, tokens in enumerate(full):
        assert [step[row] for step in steps] == tokens + [None] * (len(steps) - len(tokens))


def test_padding_rows_of_the_vocabulary_are_never_produced(nemo):
    prompts = [[t % 40 for t in p] for p in PROMPTS]
    unlimited = generate(nemo, prompts, max_new_tokens=10, temperature=2.0, seed=0).tokens
    tokens = generate(nemo, prompts, max_new_tokens=10, vocab_size=40, temperature=2.0, seed=0).tokens
    assert any(t >= 40 for row in unlimited for t in row) and all(t < 40 for row in tokens for t in row)


def test_training_model_left_in_training_mode():
    model = build(v11_config(init_method_std=0.3, hidden_dropout=0.5, attention_dropout=0.5)).train()
    eval_tokens = generate(model.eval(), PROMPTS, max_new_tokens=5, greedy=True).tokens
    model.train()
    assert generate(model, PROMPTS, max_new_tokens=5, greedy=True).tokens == eval_tokens  # dropout was off
    assert model.training and torch.is_grad_enabled()


def test_zero_new_tokens_and_no_prompts(model):
    assert generate(model, PROMPTS, max_new_tokens=0).tokens == [[]] * len(PROMPTS)
    assert generate(model, [], max_new_tokens=3) == Generation(tokens=[], stop_reasons=[])


def test_relative_positions_take_any_length():
    model = build(CONFIGS["v1.1"])
    long = [(7 * i) % V for i in range(600)]  # longer than any position table; relative buckets have no end
    assert len(generate(model, [long, [3]], max_new_tokens=20, greedy=True).tokens[0]) == 20


# --- bad input: one clear line each --------------------------------------------------------------------------------

@pytest.mark.parametrize(("prompts", "kwargs", "message"), [
    ([[1, 2], []], dict(max_new_tokens=3), r"^prompt 1 is empty: every prompt needs at least one token$"),
    ([[1, 2, 3, 4], [3, 96, 4]], dict(max_new_tokens=3),  # right-padded: the position is the token's own
     r"^prompt 1 has token id 96 at position 1, outside the vocabulary of 96 tokens \(ids 0\.\.95\)$"),
    ([[1, -1]], dict(max_new_tokens=3), r"^prompt 0 has token id -1 at position 1, outside the vocabulary"),
    ([[1, 2], [91]], dict(max_new_tokens=3, vocab_size=90),
     r"^prompt 1 has token id 91 at position 0, outside the vocabulary of 90 tokens \(ids 0\.\.89\)$"),
    ([[1, 2], [3] * 17], dict(max_new_tokens=3),
     r"^prompt 1 has 17 tokens, but the encoder has 16 positions \(max_position_embeddings\)$"),
    ([[1, 2]], dict(max_new_tokens=17),
     r"^max_new_tokens=17 needs 17 decoder positions, but the model has 16 \(max_position_embeddings\)$"),
])
def test_bad_prompts(nemo, prompts, kwargs, message):
    with pytest.raises(PromptError, match=message) as err:
        generate(nemo, prompts, **kwargs)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
    with pytest.raises(PromptError, match=message):
        stream_generate(nemo, prompts, **kwargs)  # on the call, not on the first step


def test_prompts_that_fit_exactly(nemo):
    assert len(generate(nemo, [[3] * 16], max_new_tokens=16, greedy=True).tokens[0]) == 16


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(decoder_start_token_id=96), "decoder_start_token_id=96 is outside the model's vocabulary of 96 tokens"),
    (dict(pad_id=-1), "pad_id=-1 is outside the model's vocabulary of 96 tokens"),
    (dict(max_new_tokens=-1), "max_new_tokens must be ≥ 0"),
])
def test_bad_arguments(nemo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(nemo, PROMPTS, **{"max_new_tokens": 3, **kwargs})


def test_decoder_start_token_is_refused_for_a_decoder_only_model():
    gpt = build_model(GPTConfig(vocab_size=96, max_position_embeddings=32, num_layers=1, hidden_size=32,
                                num_attention_heads=4, ffn_hidden_size=64, kv_channels=8))
    with pytest.raises(ValueError, match=r"^decoder_start_token_id=0: GPT has no decoder of its own"):
        generate(gpt, PROMPTS, max_new_tokens=3, decoder_start_token_id=0)
