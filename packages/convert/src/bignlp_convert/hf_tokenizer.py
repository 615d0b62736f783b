"""A checkpoint's tokenizer as files ``transformers.AutoTokenizer`` loads with the same ids, and back.

Export writes one ``tokenizer.json`` (the ``tokenizers`` library's format) for every kind we train
with: GPT-2 BPE from its vocab/merges (byte-level, as GPT-2's fast tokenizer), BERT WordPiece as our
tokenizer already holds it, SentencePiece unigram models converted by ``tokenizers``; then the
tokens we append (T5 sentinels ``<extra_id_N>``, role tokens) as special added tokens, in our
order, so ``<extra_id_0>`` keeps its id (Hugging Face's own T5 tokenizer numbers them from the
top instead). No post-processor: like ours, it adds no BOS/EOS/[CLS] to a text. GPT-2 also
keeps ``vocab.json``/``merges.txt``. The ids are checked after writing; a tokenizer that cannot be
reproduced is an error, not a silently different vocabulary.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from bignlp_contracts import ArtifactError
from bignlp_tokenizers import Tokenizer, TokenizerSpec, build_tokenizer

from .spm_proto import CONTROL, UNIGRAM, UNKNOWN, parse_model

SAMPLE = "Tokenizers must agree: 3.14, naïve café, «Grüße», 東京, <extra_id_0> and </s>."


def _backend(tok: Tokenizer):
    """A ``tokenizers.Tokenizer`` computing ``tok``'s base vocabulary (before appended tokens)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    if tok.type == "gpt2-bpe":
        files = tok.files()
        bpe = models.BPE.from_file(str(files["vocab_file"][1]), str(files["merges_file"][1]))
        t = HFTokenizer(bpe)
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        return t
    if tok.type == "sentencepiece":
        return _unigram(Path(tok.files()["tokenizer_model"][1]))
    backend = getattr(tok, "_tok", None)
    if backend is None:
        raise ArtifactError(f"tokenizer type {tok.type} has no Hugging Face form")
    return HFTokenizer.from_str(backend.to_str())


def _read_model(model_file: Path):
    try:
        return parse_model(model_file.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"tokenizer {model_file}: not a SentencePiece model ({e})") from None


def _unigram(model_file: Path):
    """A SentencePiece unigram model as a ``tokenizers`` Unigram with the model's own normalisation rules."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import Unigram

    proto = _read_model(model_file)
    if proto.trainer_spec.model_type != UNIGRAM:  # 1 = UNIGRAM; BPE models have other merge rules
        raise ArtifactError(f"tokenizer {model_file}: a SentencePiece {proto.trainer_spec.model_type} model; only "
                            "unigram models (those of T5 and mT5) export to tokenizer.json")
    t = HFTokenizer(Unigram([(p.piece, p.score) for p in proto.pieces], proto.trainer_spec.unk_id,
                            proto.trainer_spec.byte_fallback))
    norm = proto.normalizer_spec
    steps = [normalizers.Precompiled(norm.precompiled_charsmap)] if norm.precompiled_charsmap else []
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    t.normalizer = normalizers.Sequence(steps)
    scheme = "always" if norm.add_dummy_prefix else "never"
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    t.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    return t


def _text_of(tok: Tokenizer, token_id: int | None) -> str | None:
    if token_id is None:
        return None
    for text, i in tok.special_tokens.items():
        if i == token_id:
            return text
    return tok.decode([token_id])


def export_tokenizer(tok: Tokenizer, out: Path, architecture: str) -> list[str]:
    """Write ``tok`` into the model directory ``out``; the names of the files written."""
    from tokenizers import AddedToken

    backend = _backend(tok)
    have = backend.get_vocab(with_added_tokens=True)
    # every token ours reads as special text (the vocabulary's control pieces and the appended tokens),
    # in id order: a token the vocabulary has keeps its id, an appended one gets the next
    for text, token_id in sorted(tok.special_tokens.items(), key=lambda kv: kv[1]):
        if text in have and have[text] != token_id:
            continue
        backend.add_special_tokens([AddedToken(text, special=True, normalized=False)])
        if backend.token_to_id(text) != token_id:
            raise ArtifactError(f"tokenizer: {text} would get id {backend.token_to_id(text)} in tokenizer.json, "
                                f"ours is {token_id}")
    backend.save(str(out / "tokenizer.json"))
    files = ["tokenizer.json", "tokenizer_config.json"]
    eod = _text_of(tok, tok.eod_id)
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              "eos_token": eod, "model_max_length": 1_000_000_000_000_000_019_884_624_838_656}
    for role in ("bos", "pad", "unk"):
        text = _text_of(tok, getattr(tok, f"{role}_id", None))
        if text is not None:
            config[f"{role}_token"] = text
    if tok.sentinel_ids:
        config["additional_special_tokens"] = [_text_of(tok, i) for i in tok.sentinel_ids]
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if tok.type == "gpt2-bpe":
        for key in ("vocab_file", "merges_file"):
            name, source = tok.files()[key]
            shutil.copyfile(source, out / name)
            files.append(name)
    # the same ids as ours, or no export (Hugging Face always reads special-token text as the token)
    want, got = tok.encode(SAMPLE, allow_special=True), backend.encode(SAMPLE, add_special_tokens=False).ids
    if want != got:
        at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        raise ArtifactError(f"tokenizer {tok.type}: tokenizer.json gives other ids than ours on a sample "
                            f"(from token {at}: ours {want[at:at + 3]}, tokenizer.json {got[at:at + 3]})")
    return files


def _sentinel_count(vocab: dict[str, int]) -> int:
    n = 0
    while f"<extra_id_{n}>" in vocab:
        n += 1
    return n


def _spiece_to_json(model_file: Path, config: dict[str, Any], out: Path) -> Path:
    """``spiece.model`` as the ``tokenizer.json`` transformers' ``T5Tokenizer`` computes from it.

    Hub T5 v1.1/mT5 directories ship only the SentencePiece model; transformers numbers its
    ``extra_ids`` sentinels from the top (``<extra_id_0>`` is the last id), so they are appended here
    in that order. The control and unknown pieces are special, as there.
    """
    from sentencepiece import SentencePieceProcessor
    from tokenizers import AddedToken

    proto = _read_model(model_file)
    backend = _unigram(model_file)
    specials = [p.piece for p in proto.pieces if p.type in (UNKNOWN, CONTROL)]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    listed = [t for t in config.get("additional_special_tokens") or [] if isinstance(t, str)]
    numbers = {int(m.group(1)) for t in listed if (m := re.fullmatch(r"<extra_id_(\d+)>", t))}
    numbers |= set(range(int(config.get("extra_ids", 0 if listed else 100))))
    extra = [f"<extra_id_{i}>" for i in sorted(numbers, reverse=True)]
    extra += [t for t in listed if t not in extra]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    sp = SentencePieceProcessor(model_file=str(model_file))
    plain = SAMPLE.replace("<extra_id_0>", "").replace("</s>", "")
    if sp.encode(plain) != backend.encode(plain, add_special_tokens=False).ids:
        raise ArtifactError(f"{model_file}: its tokenizer.json form gives other ids than SentencePiece on a sample",
                            hint="save a tokenizer.json with the model (tokenizer.save_pretrained(DIR))")
    path = out / "tokenizer.json"
    backend.save(str(path))
    return path


def import_tokenizer(hf_dir: Path, architecture: str, workdir: Path) -> Tokenizer:
    """Our tokenizer of a Hugging Face model directory: its ``tokenizer.json``, else ``spiece.model`` (converted
    into ``workdir``, which must outlive the checkpoint's writing), else GPT-2's vocab/merges.

    The ``<extra_id_N>`` tokens it holds become our T5 sentinels with the ids they have there.
    """
    from tokenizers import Tokenizer as HFTokenizer

    config_file = hf_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    eos = config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    tokenizer_file = hf_dir / "tokenizer.json"
    if not tokenizer_file.is_file() and (hf_dir / "spiece.model").is_file():
        tokenizer_file = _spiece_to_json(hf_dir / "spiece.model", config, workdir)
        eos = eos or "</s>"
    if tokenizer_file.is_file():
        vocab = HFTokenizer.from_file(str(tokenizer_file)).get_vocab(with_added_tokens=True)
        return build_tokenizer(TokenizerSpec("huggingface", tokenizer_file=str(tokenizer_file), eod_token=eos,
                                             num_sentinel_tokens=_sentinel_count(vocab)))
    if (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        return build_tokenizer(TokenizerSpec("gpt2-bpe", vocab_file=str(hf_dir / "vocab.json"),
                                             merges_file=str(hf_dir / "merges.txt")))
    raise ArtifactError(f"{hf_dir}: no tokenizer.json, spiece.model or GPT-2 vocab.json + merges.txt",
                        hint="save the tokenizer with the model (tokenizer.save_pretrained(DIR)); a fast tokenizer "
                             "writes tokenizer.json")
