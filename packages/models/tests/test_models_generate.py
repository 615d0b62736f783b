"""Incremental decoding with a KV cache, and generate: equal to full forwards, to itself per prompt, and to HF."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bignlp_models import GPT, GPTConfig, KVCache, build_model
from bignlp_models.generate import Generation, PromptError, Sampling, generate, sample_logits, stream_generate
from bignlp_models.layers import SelfAttention, vocab_logits

# init std 0.3: with GPT-3's 0.02 a random model mostly repeats its last token, and greedy comparisons prove little
CFG = GPTConfig(vocab_size=96, max_position_embeddings=48, num_layers=2, hidden_size=32, num_attention_heads=4,
                ffn_hidden_size=64, kv_channels=8, hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.3)
PROMPTS = [[5, 17, 3, 88, 41, 9, 60], [12, 7, 30], [70, 2, 55, 23, 8], [44]]
ATOL = 1e-5


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return build_model(CFG).eval()


def greedy_by_full_forwards(model: GPT, prompt: list[int], steps: int) -> list[int]:
    """The reference: argmax of a full forward (no cache) over everything so far, once per new token."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def left_padded(prompts: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(map(len, prompts))
    tokens = torch.tensor([[pad_id] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[False] * (longest - len(p)) + [True] * len(p) for p in prompts])
    return tokens, mask


# --- the cached forward -------------------------------------------------------------------------------------------

def test_cached_logits_equal_full_forward(model):
    tokens = torch.randint(0, CFG.vocab_size, (3, 20))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(3, 20)
        parts = [model(tokens[:, :8], cache=cache),  # prefill
                 model(tokens[:, 8:12], cache=cache)]  # a chunk after cached positions: causal inside it
        parts += [model(tokens[:, i:i + 1], cache=cache) for i in range(12, 20)]  # one token a step
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=ATOL, rtol=0)


def test_cached_logits_with_left_padding_equal_each_prompt_alone(model):
    """Ragged prompts, left-padded: each row's logits equal its unpadded full forward (positions from 0)."""
    continuations = torch.randint(0, CFG.vocab_size, (len(PROMPTS), 5))
    tokens, mask = left_padded(PROMPTS)
    with torch.no_grad():
        cache = KVCache(len(PROMPTS), tokens.shape[1] + 5, padding_mask=mask)
        prefill = model(tokens, cache=cache)
        steps = torch.cat([model(continuations[:, i:i + 1], cache=cache) for i in range(5)], dim=1)
        for row, prompt in enumerate(PROMPTS):
            alone = model(torch.tensor([prompt + continuations[row].tolist()]))[0]
            torch.testing.assert_close(prefill[row, tokens.shape[1] - len(prompt):], alone[:len(prompt)],
                                       atol=ATOL, rtol=0)
            torch.testing.assert_close(steps[row], alone[len(prompt):], atol=ATOL, rtol=0)


def test_position_ids_start_at_each_rows_first_real_token():
    _, mask = left_padded(PROMPTS)
    cache = KVCache(len(PROMPTS), mask.shape[1] + 2, padding_mask=mask)
    positions = cache.position_ids(mask.shape[1] + 2)
    for row, prompt in enumerate(PROMPTS):
        real = positions[row, mask.shape[1] - len(prompt):]
        assert real.tolist() == list(range(len(prompt) + 2))


def test_cache_full_is_one_clear_error(model):
    cache = KVCache(1, 4)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache=cache)
        with pytest.raises(ValueError, match="KV cache full: 3 positions filled, 2 more do not fit in max_len=4"):
            model(torch.tensor([[4, 5]]), cache=cache)


def test_cache_takes_the_head_count_from_the_tensors():
    """A tensor-parallel rank holds some of the heads: half the QKV rows, and the cache still fits them."""
    torch.manual_seed(0)
    attention = SelfAttention(CFG).eval()
    with torch.no_grad():  # keep heads 0 and 1 of 4 (per-head [q|k|v] rows), as a TP=2 rank 0 would
        half = nn_linear(attention.linear_qkv, rows=slice(0, 2 * 3 * CFG.kv_channels))
        attention.linear_qkv = half
        attention.linear_proj = nn_linear(attention.linear_proj, cols=slice(0, 2 * CFG.kv_channels))
        x = torch.randn(2, 9, CFG.hidden_size)
        full = attention(x)
        cache = KVCache(2, 9)
        first = attention(x[:, :6], cache.attention_mask(6), cache=cache.layer("0"))
        cache.advance(6)
        rest = []
        for i in range(6, 9):
            rest.append(attention(x[:, i:i + 1], cache.attention_mask(1), cache=cache.layer("0")))
            cache.advance(1)
    assert cache.layer("0").keys.shape == (2, 2, 9, CFG.kv_channels)
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=ATOL, rtol=0)


def nn_linear(linear: torch.nn.Linear, rows: slice = slice(None), cols: slice = slice(None)) -> torch.nn.Linear:
    weight = linear.weight[rows, cols]
    out = torch.nn.Linear(weight.shape[1], weight.shape[0])
    out.weight.copy_(weight)
    out.bias.copy_(linear.bias[rows] if cols == slice(None) else linear.bias)
    return out


def test_vocab_logits_equal_linear():
    x, weight = torch.randn(3, 2, 32), torch.randn(200, 32)  # 200: 8 chunks of 25
    torch.testing.assert_close(vocab_logits(x, weight), F.linear(x, weight), atol=ATOL, rtol=0)


# --- generate -----------------------------------------------------------------------------------------------------

def test_greedy_equals_argmax_of_full_forwards(model):
    result = generate(model, PROMPTS, max_new_tokens=12, greedy=True)
    assert isinstance(result, Generation)
    for prompt, tokens in zip(PROMPTS, result.tokens):
        assert tokens == greedy_by_full_forwards(model, prompt, 12)
    assert result.stop_reasons == ["length"] * len(PROMPTS)
    assert len(set(map(tuple, result.tokens))) > 1 and len(set(result.tokens[0])) > 2  # not a degenerate model


def test_batch_equals_each_prompt_alone(model):
    batch = generate(model, PROMPTS, max_new_tokens=10, greedy=True).tokens
    assert batch == [generate(model, [p], max_new_tokens=10, greedy=True).tokens[0] for p in PROMPTS]


def test_temperature_zero_and_top_k_1_are_greedy(model):
    greedy = generate(model, PROMPTS, max_new_tokens=10, greedy=True).tokens
    assert generate(model, PROMPTS, max_new_tokens=10, temperature=0.0).tokens == greedy
    assert generate(model, PROMPTS, max_new_tokens=10, top_k=1, seed=3).tokens == greedy
    assert generate(model, PROMPTS, max_new_tokens=10, top_p=1e-6, seed=3).tokens == greedy


def test_same_seed_same_samples_other_seed_differs(model):
    kwargs = dict(max_new_tokens=16, temperature=1.5, top_k=50, top_p=0.95)
    first = generate(model, PROMPTS, seed=1, **kwargs).tokens
    assert generate(model, PROMPTS, seed=1, **kwargs).tokens == first
    assert generate(model, PROMPTS, seed=2, **kwargs).tokens != first
    assert first != generate(model, PROMPTS, max_new_tokens=16, greedy=True).tokens


def test_stop_token_stops_its_row_only(model):
    full = generate(model, PROMPTS, max_new_tokens=12, greedy=True).tokens
    stop = full[0][3]  # the first prompt's fourth new token
    result = generate(model, PROMPTS, max_new_tokens=12, greedy=True, stop_token_ids=[stop])
    for tokens, reason, expected in zip(result.tokens, result.stop_reasons, full):
        if stop in expected:
            assert tokens == expected[:expected.index(stop) + 1] and reason == "stop"
        else:
            assert tokens == expected and reason == "length"
    assert result.tokens[0] == full[0][:full[0].index(stop) + 1]
    assert len(result.tokens[0]) < 12 and any(len(t) == 12 for t in result.tokens)


def test_stream_yields_each_step_and_ends_when_all_rows_stopped(model):
    full = generate(model, PROMPTS[:2], max_new_tokens=12, greedy=True, stop_token_ids=7).tokens
    steps = list(stream_generate(model, PROMPTS[:2], max_new_tokens=12, greedy=True, stop_token_ids=7))
    assert len(steps) == max(map(len, full))
    for row, tokens in enumerate(full):
        assert [step[row] for step in steps] == tokens + [None] * (len(steps) - len(tokens))
    stop_all = [full[0][0], full[1][0]]  # every row stops at its first token: one step
    assert list(stream_generate(model, PROMPTS[:2], max_new_tokens=12, greedy=True,
                                stop_token_ids=stop_all)) == [[full[0][0], full[1][0]]]


def test_padding_rows_of_the_vocabulary_are_never_produced(model):
    with torch.no_grad():  # make the padding rows (90..95) win every argmax: LN output is a constant v
        v = torch.randn(CFG.hidden_size)
        model.final_layernorm.weight.zero_()
        model.final_layernorm.bias.copy_(v)
        model.embedding.word_embeddings.weight[90:] = 10 * v
    prompts = [[1, 2, 3], [40, 50]]
    assert all(t >= 90 for row in generate(model, prompts, max_new_tokens=5, greedy=True).tokens for t in row)
    for kwargs in (dict(greedy=True), dict(temperature=2.0, seed=0), dict(top_k=20, seed=1), dict(top_p=0.99, seed=2)):
        tokens = generate(model, prompts, max_new_tokens=20, vocab_size=90, **kwargs).tokens
        assert all(t < 90 for row in tokens for t in row), kwargs


def test_sample_logits_keeps_to_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])).expand(400, 5)
    gen = torch.Generator().manual_seed(0)
    top2 = sample_logits(logits, Sampling(top_k=2), generator=gen)
    assert set(top2.tolist()) == {0, 1}
    nucleus = sample_logits(logits, Sampling(top_p=0.85), generator=gen)  # 0.5 + 0.3 < 0.85: three tokens
    assert set(nucleus.tolist()) == {0, 1, 2}
    assert sample_logits(logits, Sampling(greedy=True)).eq(0).all()


def test_generate_leaves_a_training_model_in_training_mode():
    torch.manual_seed(0)
    model = build_model(GPTConfig(**{**vars(CFG), "hidden_dropout": 0.5, "attention_dropout": 0.5}))
    assert model.training
    eval_tokens = generate(model.eval(), PROMPTS, max_new_tokens=6, greedy=True).tokens
    model.train()
    assert generate(model, PROMPTS, max_new_tokens=6, greedy=True).tokens == eval_tokens  # dropout was off
    assert model.training and torch.is_grad_enabled()


def test_zero_new_tokens_and_no_prompts(model):
    assert generate(model, PROMPTS, max_new_tokens=0).tokens == [[]] * len(PROMPTS)
    assert generate(model, [], max_new_tokens=3) == Generation(tokens=[], stop_reasons=[])


# --- bad input: one clear line each --------------------------------------------------------------------------------

@pytest.mark.parametrize(("prompts", "kwargs", "message"), [
    ([[1, 2], [3] * 40], dict(max_new_tokens=9),
     r"^prompt 1 has 40 tokens; with max_new_tokens=9 that is 49 positions, but the model has 48 "
     r"\(max_position_embeddings\)$"),
    ([[1, 2], []], dict(max_new_tokens=3), r"^prompt 1 is empty: every prompt needs at least one token$"),
    ([[1, 2], [3, 96, 4]], dict(max_new_tokens=3),
     r"^prompt 1 has token id 96 at position 1, outside the vocabulary of 96 tokens \(ids 0\.\.95\)$"),
    ([[1, -1]], dict(max_new_tokens=3), r"^prompt 0 has token id -1 at position 1, outside the vocabulary"),
    ([[1, 2], [91]], dict(max_new_tokens=3, vocab_size=90),
     r"^prompt 1 has token id 91 at position 0, outside the vocabulary of 90 tokens \(ids 0\.\.89\)$"),
    ([[1.5, 2]], dict(max_new_tokens=3), r"^prompts must hold integer token ids"),
])
def test_bad_prompts(model, prompts, kwargs, message):
    with pytest.raises(PromptError, match=message) as err:
        generate(model, prompts, **kwargs)
    assert isinstance(err.value, ValueError)
    with pytest.raises(PromptError, match=message):
        stream_generate(model, prompts, **kwargs)  # on the call, not on the first step


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(temperature=-1.0), "temperature must be ≥ 0"),
    (dict(top_k=-2), "top_k must be ≥ 0"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=-1), "max_new_tokens must be ≥ 0"),
    (dict(vocab_size=97), r"vocab_size=97 must be in 1\.\.96"),
    (dict(pad_id=96), "pad_id=96 is outside the model's vocabulary of 96 tokens"),
])
def test_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, PROMPTS, **{"max_new_tokens": 3, **kwargs})


# --- Hugging Face ---------------------------------------------------------------------------------------------------

def test_greedy_equals_hugging_face_gpt2(model):
    pytest.importorskip("transformers")
    from bignlp_models.hf_gpt2 import to_hf_gpt2

    hf = to_hf_gpt2(model)
    tokens, mask = left_padded(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(hf(torch.tensor([PROMPTS[0]])).logits, model(torch.tensor([PROMPTS[0]])),
                                   atol=ATOL, rtol=0)
        out = hf.generate(tokens, attention_mask=mask.long(), max_new_tokens=12, do_sample=False, pad_token_id=0)
    ours = generate(model, PROMPTS, max_new_tokens=12, greedy=True).tokens
    assert ours == out[:, tokens.shape[1]:].tolist()
