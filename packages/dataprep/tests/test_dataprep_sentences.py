"""``split_sentences``: the rule-based splitter, one sequence per sentence in the .idx, long sentences cut,
and the GPT default (no splitting) byte for byte what 0.5.0 wrote."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dataprep_helpers import DATA, DEMO, EDGE_TEXTS, config, demo_lines

from bignlp_contracts import read_manifest
from bignlp_dataprep.cli import main
from bignlp_dataprep.config import PreprocessConfig, load_preprocess_config
from bignlp_dataprep.indexed import IndexedDatasetReader
from bignlp_dataprep.preprocess import preprocess
from bignlp_dataprep.recipes import load_recipe
from bignlp_dataprep.runner import preprocess_settings
from bignlp_dataprep.sentences import MAX_SENTENCE_TOKENS, cut_long_sequences, split_sentences
from bignlp_tokenizers import TokenizerSpec, build_tokenizer

BERT_VOCAB = DATA / "bert" / "vocab.txt"
SPM_MULTI = DATA / "spm" / "multi_unigram_8000.model"
MULTI = DATA / "corpus" / "demo-multi.jsonl.gz"

CASES = {
    "en": (
        "Hello world. This is Mr. Smith, e.g. a man. He paid $3.50 for it! Really? Yes... and no. "
        'She said "Stop." Then she left. See No. 5 and Dr. Watson. J. R. R. Tolkien wrote it. Approx. five.',
        ["Hello world.", "This is Mr. Smith, e.g. a man.", "He paid $3.50 for it!", "Really?", "Yes... and no.",
         'She said "Stop."', "Then she left.", "See No. 5 and Dr. Watson.", "J. R. R. Tolkien wrote it.",
         "Approx. five."],
    ),
    "de": (
        "Der Termin ist am 1. Januar. Das ist z. B. gut, bzw. schlecht. Vgl. Nr. 7 oben. „Komm her.“ Er ging. "
        "Der Preis beträgt 2,50 Euro, d.h. wenig.",
        ["Der Termin ist am 1. Januar.", "Das ist z. B. gut, bzw. schlecht.", "Vgl. Nr. 7 oben.", "„Komm her.“",
         "Er ging.", "Der Preis beträgt 2,50 Euro, d.h. wenig."],
    ),
    "es": (
        "¿Qué tal? ¡Muy bien! El Sr. García llegó a las 3.30 de la tarde. La Dra. Pérez citó la pág. 125. Fin.",
        ["¿Qué tal?", "¡Muy bien!", "El Sr. García llegó a las 3.30 de la tarde.", "La Dra. Pérez citó la pág. 125.",
         "Fin."],
    ),
    "ja": (
        "今日は晴れです。明日は雨でしょう！本当ですか？「はい。」と彼は言った。円周率は3.14です。 次の文。",
        ["今日は晴れです。", "明日は雨でしょう！", "本当ですか？", "「はい。」と彼は言った。", "円周率は3.14です。",
         "次の文。"],
    ),
    "zh": (
        "我们走吧。你呢？好！他说：“我明白了。”然后离开了。",
        ["我们走吧。", "你呢？", "好！", "他说：“我明白了。”然后离开了。"],
    ),
}


@pytest.mark.parametrize("lang", CASES)
def test_splitter_cases(lang):
    text, expected = CASES[lang]
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert [p.strip() for p in pieces] == expected


def test_paragraph_breaks_cut_single_line_breaks_do_not():
    text = "Title line\nwrapped text of one sentence\nstill going.\n\nNext paragraph\n \t\nThird, no period"
    assert split_sentences(text) == ["Title line\nwrapped text of one sentence\nstill going.",
                                     "\n\nNext paragraph", "\n \t\nThird, no period"]
    # a numbered heading at the start of a line is not a sentence; a decimal never is cut
    assert split_sentences("1. Tutorial\n3.1. Principles\nPi is 3.14. Next.") == [
        "1. Tutorial\n3.1. Principles\nPi is 3.14.", " Next."]


@pytest.mark.parametrize("text", ["", " ", "no end at all", "  leading. Trailing.  ", "a.\n\n\n", "。", "?! ?"])
def test_pieces_partition_the_text_and_hold_text(text):
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert len(pieces) == 1 or all(p.strip() for p in pieces)


def test_pieces_partition_every_shipped_document():
    with gzip.open(MULTI, "rt", encoding="utf-8") as f:
        multi = [json.loads(line)["text"] for line in f]
    texts = [json.loads(line)["text"] for line in demo_lines(694)] + multi + EDGE_TEXTS
    for text in texts:
        pieces = split_sentences(text)
        assert "".join(pieces) == text
        assert len(pieces) == 1 or all(p.strip() for p in pieces)
    assert sum(len(split_sentences(t)) for t in texts) > 20 * len(texts)


def test_cut_long_sequences_changes_only_the_index():
    assert cut_long_sequences([3, 512], [2]) is None
    lengths, counts = cut_long_sequences([3, 1100, 513, 4], [2, 0, 2], max_tokens=512)
    assert lengths == [3, 512, 512, 76, 512, 1, 4] and counts == [4, 0, 3]


def _wordpiece(tmp_path: Path, name: str, inp: Path, **kw) -> Path:
    cfg = PreprocessConfig(input=(str(inp),), output_prefix=str(tmp_path / name / "x"),
                           tokenizer_type="bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB), **kw)
    preprocess(cfg)
    return tmp_path / name / "x_text_document"


def _megatron(prefix: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    return IndexedDataset(str(prefix))


@pytest.mark.parametrize("tokenizer", ["bert-wordpiece", "gpt2-bpe", "sentencepiece"])
def test_idx_has_one_sequence_per_sentence(tmp_path, tokenizer):
    """Each document's sequences are its sentences, encoded one by one (read back by megatron-core).

    WordPiece and GPT-2 BPE (cuts only where their pre-tokenizers already split) give the very
    tokens of the unsplit document; SentencePiece differs in a few places, measured here.
    """
    inp = tmp_path / "in.jsonl"
    if tokenizer == "sentencepiece":
        inp.write_bytes(gzip.decompress(MULTI.read_bytes()))
        spec = TokenizerSpec("sentencepiece", tokenizer_model=str(SPM_MULTI))
        files = {"tokenizer_type": "sentencepiece", "tokenizer_model": str(SPM_MULTI)}
    elif tokenizer == "gpt2-bpe":
        inp.write_text("".join(demo_lines(80)), encoding="utf-8")
        spec = TokenizerSpec("gpt2-bpe", vocab_file=str(DATA / "gpt2" / "vocab.json"),
                             merges_file=str(DATA / "gpt2" / "merges.txt"))
        files = {"vocab_file": spec.vocab_file, "merges_file": spec.merges_file}
    else:
        cases = "".join(json.dumps({"text": text}) + "\n" for text, _ in CASES.values())
        inp.write_text("".join(demo_lines(80)) + cases, encoding="utf-8")
        spec = TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB))
        files = {"tokenizer_type": "bert-wordpiece-lowercase", "vocab_file": str(BERT_VOCAB)}
    tok = build_tokenizer(spec)
    texts = [json.loads(line)["text"] for line in inp.read_text(encoding="utf-8").splitlines()]
    split = PreprocessConfig(input=(str(inp),), output_prefix=str(tmp_path / "split" / "x"), split_sentences=True,
                             **files)
    whole = PreprocessConfig(input=(str(inp),), output_prefix=str(tmp_path / "whole" / "x"), **files)
    manifest = preprocess(split)
    preprocess(whole)
    ds = _megatron(tmp_path / "split" / "x_text_document")
    docs = ds.document_indices
    assert len(docs) == len(texts) + 1
    assert manifest.summary["split_sentences"] is True
    assert manifest.summary["datasets"][0]["num_sequences"] == len(ds.sequence_lengths) > 10 * len(texts)
    differs = 0
    for i, text in enumerate(texts):
        sentences = [ids for s in split_sentences(text) if (ids := tok.encode(s))]
        # one sequence per sentence, cut in 512-token pieces (SentencePiece: a few long table rows)
        expected = [ids[k : k + MAX_SENTENCE_TOKENS] for ids in sentences for k in range(0, len(ids),
                                                                                         MAX_SENTENCE_TOKENS)]
        assert [ds[j].tolist() for j in range(docs[i], docs[i + 1])] == expected and len(expected) > 1
        differs += [t for s in sentences for t in s] != tok.encode(text)
    plain = IndexedDatasetReader.open(tmp_path / "whole" / "x_text_document")
    assert len(plain.sequence_lengths) == len(texts)
    if tokenizer == "sentencepiece":
        # a sentence after 。！？ without a space starts with SentencePiece's "▁" (ja, zh), and unigram
        # ties of near-equal score fall differently in a few long tables: 12 of the 155 documents here
        assert 0 < differs <= 12
    else:
        assert differs == 0
        assert (tmp_path / "split" / "x_text_document.bin").read_bytes() == \
            (tmp_path / "whole" / "x_text_document.bin").read_bytes()


def test_long_sentences_are_cut_to_512_tokens(tmp_path):
    """A sentence over 512 tokens becomes pieces of at most 512 (the EOD counted), same tokens, so that
    megatron-core's sample map keeps the document (it skips any multi-sequence document holding a longer one)."""
    long = " ".join(f"word{i % 50}" for i in range(700))  # no sentence end: ~2,100 WordPiece tokens
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"text": f"A short one. Now {long}. The end."}) + "\n"
                   + json.dumps({"text": "Only short. Sentences here."}) + "\n", encoding="utf-8")
    split = _wordpiece(tmp_path, "split", inp, split_sentences=True, append_eod=True)
    whole = _wordpiece(tmp_path, "whole", inp, append_eod=True)
    assert split.with_suffix(".bin").read_bytes() == whole.with_suffix(".bin").read_bytes()
    ds = _megatron(split)
    lengths = ds.sequence_lengths.tolist()
    n_long = len(build_tokenizer(TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB)))
                 .encode(" Now " + long + "."))
    pieces = [MAX_SENTENCE_TOKENS] * (n_long // MAX_SENTENCE_TOKENS) + [n_long % MAX_SENTENCE_TOKENS]
    assert lengths == [4, *pieces, 4, 3, 4] and max(lengths) <= MAX_SENTENCE_TOKENS  # EOD on each last sentence
    assert ds.document_indices.tolist() == [0, 2 + len(pieces), 4 + len(pieces)]

    from megatron.core.datasets import helpers

    def first_sentences(docs: np.ndarray, lengths: list[int]) -> set[int]:
        """The first sequence of every T5 sample megatron-core's sample map makes (seq_length 128)."""
        mapping = helpers.build_mapping(docs.astype(np.int64), np.array(lengths, np.int32), 1, 100, 126, 0.0, 1,
                                        False, 1)
        return {int(m[0]) for m in mapping}

    assert min(first_sentences(ds.document_indices, lengths)) == 0  # the long document gives samples
    uncut = [4, sum(pieces), 4, 3, 4]  # as it would be without the cut
    assert first_sentences(np.array([0, 3, 5]), uncut) == {3}  # megatron-core drops the whole first document


# sha256 of the .bin/.idx bignlp-dataprep 0.5.0 wrote for the demo corpus, GPT-2 BPE, --append-eod
GPT_DEMO_SHA256 = {".bin": "31886e32c95e076f04d0fc76ee838b29bf1979533b682dfe0b029985b325f6bf",
                   ".idx": "1ec1984606bac4c6febe8761dac1ff12f4b417310c811447f5ad0f6cd0b65498"}


def test_gpt_default_is_unchanged_byte_for_byte(tmp_path):
    manifest = preprocess(config([DEMO], tmp_path / "x"))
    assert config([DEMO], tmp_path / "x").split_sentences is False
    for ext, digest in GPT_DEMO_SHA256.items():
        assert hashlib.sha256((tmp_path / f"x_text_document{ext}").read_bytes()).hexdigest() == digest
    entry = manifest.summary["datasets"][0]
    assert entry["num_sequences"] == entry["num_documents"] == 694 and manifest.summary["split_sentences"] is False


def test_list_values_are_taken_as_given_sentences(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"text": ["One. Two.", "Three."]}) + "\n", encoding="utf-8")
    prefix = _wordpiece(tmp_path, "split", inp, split_sentences=True)
    assert _megatron(prefix).document_indices.tolist() == [0, 2]


def test_config_flag_recipe_key_and_marker_settings(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "One. Two."}\n', encoding="utf-8")
    assert load_preprocess_config(None, [f"input={inp}", f"output_prefix={tmp_path}/o/x"]).split_sentences is False
    assert load_preprocess_config(None, [f"input={inp}", f"output_prefix={tmp_path}/o/x",
                                         "split_sentences=true"]).split_sentences is True
    res = CliRunner().invoke(main, ["preprocess", "--input", str(inp), "--output-prefix", str(tmp_path / "o" / "x"),
                                    "--tokenizer-type", "bert-wordpiece", "--vocab-file", str(BERT_VOCAB),
                                    "--split-sentences"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 sequences (sentences) in all, 2.0 per document" in res.output
    assert read_manifest(tmp_path / "o").config["split_sentences"] is True
    assert "--split-sentences" in CliRunner().invoke(main, ["preprocess", "--help"]).output

    base = [f"data_dir={tmp_path / 'd'}"]
    assert load_recipe("t5/download_t5_pile", base).split_sentences is True
    assert load_recipe("mt5/download_mc4", [*base, "languages=de", "num_files={de: 1}"]).split_sentences is True
    gpt = load_recipe("gpt3/download_gpt3_pile", base)
    assert gpt.split_sentences is False
    # markers record it only when on: unsplit markers written before 0.6.0 stay valid, split ones differ
    spec = TokenizerSpec("gpt2-bpe", vocab_file=str(DATA / "gpt2" / "vocab.json"),
                         merges_file=str(DATA / "gpt2" / "merges.txt"))
    item = gpt.items()[0]
    off = preprocess_settings(gpt, spec, item)
    on = preprocess_settings(load_recipe("gpt3/download_gpt3_pile", [*base, "split_sentences=true"]), spec, item)
    assert "split_sentences" not in off and on == {**off, "split_sentences": True}
