"""Prompt-learning templates: one example through its task's template into token ids, as NeMo 1.11 builds them.

Shared by ``bignlp-train prompt-learn`` (training examples) and ``bignlp-evaluate prompt`` (the prompts it
generates from), so both read a template the same way. A template is any object with NeMo's task keys
(``taskname``, ``prompt_template``, ``virtual_token_splits``, ``answer_field``, ``truncate_field``,
``answer_only_loss``): the train config's ``TaskTemplate`` or a prompt checkpoint's ``PromptTemplate``.

The template's text is cut into pieces (literal text, ``{field}`` values, ``<|VIRTUAL_PROMPT_n|>`` runs of
virtual tokens) tokenized one by one, so the one ``truncate_field`` can be shortened by exactly the excess;
whitespace that ends a literal goes to the start of the next field's value ("Answer: {answer}" tokenizes
" Paris" as pretraining saw it). Virtual token ``k`` of a task whose rows start at ``offset`` is the id
``vocab_size + offset + k`` (``prompt``). ``<eos>`` is appended to every answer. An example longer than the
limit with no (or not enough) ``truncate_field`` to cut is dropped (None).

- GPT: tokens = prompt + answer + <eos>, next-token labels; loss on the answer and <eos> with
  ``answer_only_loss``, else on every text token.
- T5/mT5: encoder = prompt (the answer removed) + ``<extra_id_0>``; decoder reads ``<bos> <extra_id_0>
  answer`` and predicts ``<extra_id_0> answer <eos>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bignlp_contracts import ArtifactError

VIRTUAL_PROMPT = re.compile(r"<\|VIRTUAL_PROMPT_(\d+)\|>")
FIELD = re.compile(r"\{(\w+)\}")
_PIECES = re.compile(r"(<\|VIRTUAL_PROMPT_\d+\|>|\{\w+\})")


@dataclass(frozen=True, kw_only=True)
class PromptTemplate:
    """A task's template as a prompt checkpoint records it (prompt_config.json), plus its first table row."""

    taskname: str
    prompt_template: str
    total_virtual_tokens: int
    virtual_token_splits: tuple[int, ...]
    answer_only_loss: bool = True
    answer_field: str = "answer"
    truncate_field: str | None = None
    offset: int = 0
    virtual_prompt_style: str = "p-tuning"

    @classmethod
    def from_dict(cls, data: dict) -> PromptTemplate:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        values["virtual_token_splits"] = tuple(values.get("virtual_token_splits", ()))
        return cls(**values)

    @property
    def fields(self) -> list[str]:
        return template_fields(self.prompt_template)


def template_fields(prompt_template: str) -> list[str]:
    """The ``{field}``s of a template, in order."""
    return FIELD.findall(VIRTUAL_PROMPT.sub("", prompt_template))


@dataclass
class Example:
    """One tokenized example."""

    taskname: str
    prompt: list[int]  # GPT: the text before the answer; T5: the encoder input (with <extra_id_0>)
    answer: list[int]  # the answer's tokens (no <eos>)
    answer_text: str
    tokens: list[int] = field(default_factory=list)  # GPT: model input; T5: decoder input
    labels: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Roles:
    """The special ids prompt learning needs: <eos> (GPT: end of document), and T5's <bos>, pad, <extra_id_0>."""

    eos: int
    pad: int
    bos: int | None = None
    sentinel: int | None = None


def roles_of(tokenizer, family: str) -> Roles:
    """<eos>/<pad> (for T5 also <bos> and ``<extra_id_0>``) of the base's tokenizer; BERT's: [CLS]/[SEP]."""
    if family != "t5":
        eos = tokenizer.eod_id
        return Roles(eos=eos, pad=tokenizer.pad_id if tokenizer.pad_id is not None else eos)
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.cls_id
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    sentinel = tokenizer.token_to_id("<extra_id_0>")
    if bos is None or eos is None or sentinel is None:
        raise ArtifactError(f"the base's tokenizer ({tokenizer.type}) lacks <bos>, <eos> or <extra_id_0> "
                            f"(bos {bos}, eos {eos}, <extra_id_0> {sentinel}), which T5 prompt learning needs")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    return Roles(eos=eos, pad=pad, bos=bos, sentinel=sentinel)


def _pieces(template: PromptTemplate) -> list[tuple[str, object]]:
    """("virtual", (start, n)) | ("text", str) | ("field", name) in template order, without the answer field."""
    head = template.prompt_template.rstrip()
    head = head[: len(head) - len("{" + template.answer_field + "}")]
    pieces: list[tuple[str, object]] = []
    start = 0
    for part in _PIECES.split(head):
        if not part:
            continue
        virtual = VIRTUAL_PROMPT.fullmatch(part)
        field_match = FIELD.fullmatch(part)
        if virtual:
            n = template.virtual_token_splits[int(virtual.group(1))]
            pieces.append(("virtual", (start, n)))
            start += n
        elif field_match:
            pieces.append(("field", field_match.group(1)))
        else:
            pieces.append(("text", part))
    return pieces


def encode_example(template: PromptTemplate, data: dict, tokenizer, *, offset: int, vocab_size: int, family: str,
                   roles: Roles, max_length: int | None, max_decoder_length: int | None = None,
                   with_answer: bool = True) -> Example | None:
    """``data`` as an ``Example`` (None: too long and nothing, or not enough, to truncate)."""
    pieces = _pieces(template)
    chunks: list[list[int]] = []
    kinds: list[str] = []
    carry = ""  # whitespace ending a literal, moved to the next field's value
    for kind, value in pieces:
        if kind == "virtual":
            start, n = value
            chunks.append([vocab_size + offset + start + k for k in range(n)])
            kinds.append("virtual")
            continue
        if kind == "text":
            text = carry + str(value)
            stripped = text.rstrip()
            carry = text[len(stripped):]
            if stripped:
                chunks.append(tokenizer.encode(stripped))
                kinds.append("text")
            continue
        chunks.append(tokenizer.encode(carry + str(data[value])))
        kinds.append(str(value))
        carry = ""
    answer_text = str(data.get(template.answer_field, ""))
    answer = tokenizer.encode(carry + answer_text) if with_answer else []
    if family == "t5":
        tail = [roles.sentinel]
        dec_len = len(answer) + 2
        if max_decoder_length is not None and dec_len > max_decoder_length:
            return None
    else:
        tail = []
    total = sum(len(c) for c in chunks) + len(tail) + (0 if family == "t5" else len(answer) + 1)
    if max_length is not None and total > max_length:
        excess = total - max_length
        if template.truncate_field is None or template.truncate_field not in kinds:
            return None
        i = kinds.index(template.truncate_field)
        if len(chunks[i]) < excess:
            return None
        chunks[i] = chunks[i][: len(chunks[i]) - excess]
    prompt = [t for c in chunks for t in c] + tail
    ex = Example(template.taskname, prompt, answer, answer_text)
    if family == "t5":
        ex.tokens = [roles.bos, roles.sentinel, *answer]
        ex.labels = [roles.sentinel, *answer, roles.eos]
        ex.loss_mask = [1] * len(ex.labels)
    else:
        full = prompt + answer + [roles.eos]
        ex.tokens = full[:-1]
        if template.answer_only_loss:
            ex.loss_mask = [1 if i >= len(prompt) - 1 else 0 for i in range(len(full) - 1)]
        else:
            ex.loss_mask = [0 if t >= vocab_size else 1 for t in full[1:]]
        ex.labels = [t if t < vocab_size else roles.pad for t in full[1:]]  # a virtual token is never a label
    return ex
