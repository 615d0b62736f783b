"""Test helpers for prompt learning: a tiny frozen base checkpoint and a fixed-format extraction task.

The task: "context: f3 f17 k5 f2 ... answer: k5" — the answer is the one key word (of ``NUM_KEYS``)
among the filler words. Chance exact match is about 1/NUM_KEYS for a model that
answers with some key; a base that never saw the task answers none (0).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from bignlp_contracts import Producer

NUM_KEYS = 8
NUM_FILLERS = 40
TEMPLATE = "<|VIRTUAL_PROMPT_0|>context: {context} answer: {answer}"


def write_vocab(path: Path, extra_words: tuple[str, ...] = ()) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["context", ":", "answer", "question", "?"]
    words += [f"k{i}" for i in range(NUM_KEYS)] + [f"f{i}" for i in range(NUM_FILLERS)] + list(extra_words)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(specials + words) + "\n")
    return path


def make_base(out: Path, family: str = "gpt", *, seed: int = 0, hidden: int = 64, layers: int = 2,
              pretrain_steps: int = 0, extra_words: tuple[str, ...] = ()) -> Path:
    """A tiny GPT or T5 saved as a weights-only model-checkpoint with a WordPiece tokenizer: random, or
    pretrained for ``pretrain_steps`` on ``base_document``s (the skill, in another format than the task's)."""
    from bignlp_models import GPTConfig, T5Config, get_family, save_model_checkpoint
    from bignlp_tokenizers import TokenizerSpec, build_tokenizer

    vocab = write_vocab(out.parent / f"{out.name}-vocab" / "vocab.txt", extra_words)
    tokenizer = build_tokenizer(TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(vocab),
                                              num_sentinel_tokens=4 if family == "t5" else 0))
    padded = 128
    torch.manual_seed(seed)
    if family == "gpt":
        cfg = GPTConfig(vocab_size=padded, max_position_embeddings=64, num_layers=layers, hidden_size=hidden,
                        num_attention_heads=4, ffn_hidden_size=4 * hidden, kv_channels=hidden // 4,
                        hidden_dropout=0.0, attention_dropout=0.0)
    else:
        cfg = T5Config(vocab_size=padded, hidden_size=hidden, num_attention_heads=4, kv_channels=hidden // 4,
                       encoder_num_layers=layers, decoder_num_layers=layers, encoder_ffn_hidden_size=2 * hidden,
                       decoder_ffn_hidden_size=2 * hidden, max_position_embeddings=64, hidden_dropout=0.0,
                       attention_dropout=0.0)
    spec = get_family(family)
    model = spec.build_meta(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    if pretrain_steps:
        _pretrain(model, tokenizer, family, steps=pretrain_steps, seed=seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_model_checkpoint(out, family=spec, config=cfg, state_dict=state, tokenizer=tokenizer,
                          producer=Producer("bignlp-train-tests", "0"))
    return out


def make_task_data(path: Path, *, num: int, seed: int, taskname: str = "keys", length: int = 6) -> Path:
    """``num`` lines of the key-extraction task."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for _ in range(num):
            key = f"k{rng.randrange(NUM_KEYS)}"
            words = [f"f{rng.randrange(NUM_FILLERS)}" for _ in range(length)]
            at = rng.randrange(length)
            words.insert(at, key)
            f.write(json.dumps({"taskname": taskname, "context": " ".join(words), "answer": key}) + "\n")
    return path


def prompt_overrides(base: Path, run_dir: Path, train: Path, *extra: str, taskname: str = "keys",
                     template: str = TEMPLATE, style: str = "p-tuning", splits: tuple[int, ...] = (4,)) -> list[str]:
    return [
        f"model.language_model_path={base}",
        f"exp_manager.explicit_log_dir={run_dir}",
        f"model.data.train_ds=[{train}]",
        f"model.new_tasks=[{taskname}]",
        f"model.task_templates=[{{taskname: {taskname}, prompt_template: '{template}', total_virtual_tokens: "
        f"{sum(splits)}, virtual_token_splits: [{', '.join(map(str, splits))}], answer_only_loss: true, "
        f"answer_field: answer, truncate_field: context}}]",
        f"model.virtual_prompt_style={style}",
        "trainer.accelerator=cpu",
        "trainer.max_steps=60",
        "trainer.max_epochs=null",
        "trainer.val_check_interval=1000",
        "trainer.log_every_n_steps=20",
        "model.global_batch_size=16",
        "model.micro_batch_size=16",
        "model.optim.lr=1e-2",
        "model.optim.sched.warmup_steps=5",
        "model.optim.sched.constant_steps=0",
        "model.data.max_new_tokens=3",
        *extra,
    ]


def base_document(rng: random.Random, length: int = 6) -> tuple[str, str]:
    """What the base is pretrained on: "question : <fillers and one kN> ?" → "kN". The prompt-learning task asks
    for the key in another format ("context : ... answer :"), which the base never saw."""
    key = f"k{rng.randrange(NUM_KEYS)}"
    words = [f"f{rng.randrange(NUM_FILLERS)}" for _ in range(length)]
    words.insert(rng.randrange(length), key)
    return "question : " + " ".join(words) + " ?", key


def t5_loss(model, enc: list[list[int]], dec: list[list[int]]):
    """Teacher-forced loss of a T5 on encoder and decoder id lists (padded with 0; a decoder list is
    ``<bos> target <eos>``: the model reads all but the last, is scored on all but the first)."""
    from bignlp_models import lm_loss

    n, m = max(map(len, enc)), max(map(len, dec))
    e = torch.tensor([s + [0] * (n - len(s)) for s in enc])
    d = torch.tensor([s + [0] * (m - len(s)) for s in dec])
    emask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in enc]).bool()
    real = torch.tensor([[1] * len(s) + [0] * (m - len(s)) for s in dec])
    logits = model(e, decoder_tokens=d[:, :-1], encoder_mask=emask, decoder_mask=real[:, :-1].bool())
    return lm_loss(logits, d[:, 1:], real[:, 1:])


def _pretrain(model, tokenizer, family: str, *, steps: int, seed: int, batch: int = 32) -> None:
    """A few hundred AdamW steps on ``base_document``s (a test fixture, not the product's pretraining)."""
    from bignlp_models import lm_loss

    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sep, cls = tokenizer.sep_id, tokenizer.cls_id
    model.train()
    for _ in range(steps):
        docs = [base_document(rng) for _ in range(batch)]
        if family == "gpt":
            seqs = [tokenizer.encode(q) + tokenizer.encode(a) + [sep] for q, a in docs]
            n = max(map(len, seqs))
            ids = torch.tensor([s + [0] * (n - len(s)) for s in seqs])
            mask = torch.tensor([[1] * (len(s) - 1) + [0] * (n - len(s)) for s in seqs])
            loss = lm_loss(model(ids[:, :-1]), ids[:, 1:], mask)
        else:
            loss = t5_loss(model, [tokenizer.encode(q) for q, _ in docs],
                           [[cls] + tokenizer.encode(a) + [sep] for _, a in docs])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def generations(base: Path, prompt_checkpoint: Path | None, data: Path, *, family: str = "gpt",
                max_new_tokens: int = 3) -> tuple[list[list[int]], float]:
    """Greedy answers (token ids) to ``data``'s lines with the checkpoint's prompts (None: the base alone, the
    virtual tokens left out), and their exact match."""
    from bignlp_models import generate, load_model
    from bignlp_models.prompt import install_prompts, load_prompt_checkpoint
    from bignlp_models.prompt_template import PromptTemplate, encode_example, roles_of

    lm = load_model(base)
    roles = roles_of(lm.tokenizer, family)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    if prompt_checkpoint is not None:
        ckpt = load_prompt_checkpoint(prompt_checkpoint)
        install_prompts(lm.model, rows=ckpt.rows)
        record = ckpt.tasks[rows[0]["taskname"]]
    else:
        record = {"taskname": rows[0]["taskname"], "prompt_template": TEMPLATE, "total_virtual_tokens": 4,
                  "virtual_token_splits": [4]}
    template = PromptTemplate.from_dict(record)
    prompts = [encode_example(template, row, lm.tokenizer, offset=template.offset, vocab_size=lm.vocab_size,
                              family=family, roles=roles, max_length=None, with_answer=False).prompt for row in rows]
    if prompt_checkpoint is None:
        prompts = [[t for t in p if t < lm.vocab_size] for p in prompts]
    extra = {"decoder_start_token_id": roles.bos} if family == "t5" else {}
    out = generate(lm.model, prompts, max_new_tokens=max_new_tokens, greedy=True, stop_token_ids=[roles.eos],
                   pad_id=roles.pad, **extra)
    drop = {roles.eos, roles.sentinel}
    texts = [lm.tokenizer.decode([t for t in tokens if t not in drop]).strip() for tokens in out.tokens]
    return out.tokens, sum(t == row["answer"] for t, row in zip(texts, rows)) / len(rows)


def assert_one_line(result, code: int, *needles: str) -> None:
    """A CLI refusal: exit ``code``, one ``bignlp-train:`` line naming every needle, no traceback."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("bignlp-train: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
