"""Rule-based sentence splitting for ``split_sentences`` (Megatron's ``--split-sentences`` without NLTK).

T5/BERT samples are packed from a document's sequences, so a document needs several of them:
megatron-core's T5 dataset gives a one-sequence document exactly one sample per epoch (its first
``seq_length - 2`` tokens). Megatron-LM splits with NLTK's punkt models, which must be downloaded; this
splitter needs nothing and treats every language alike.

:func:`split_sentences` cuts a document's text, and only at these places:

- after ``.``, ``!`` or ``?`` (a run of them, e.g. ``?!`` or ``...``), plus any closing quotes or
  brackets right after it, when whitespace follows;
- after the full-width ``。``, ``！``, ``？`` (CJK), with or without whitespace after them; when a
  closing quote or bracket follows them (``。」``) only if whitespace follows that;
- at a paragraph break: two line breaks with nothing but spaces or tabs between them.

A ``.`` (only periods, no closing quote) followed by whitespace does not end a sentence when the
word before it is a listed abbreviation (``e.g.``, ``i.e.``, ``Mr.``, ``Dr.``, ``No.``, ``z.B.``,
``bzw.``, ``Sr.``, ``pág.``, ...: :data:`ABBREVIATIONS`), a single letter (initials, ``z. B.``),
a number of one or two digits (ordinals: ``am 1. Januar``), a dotted number at the start of a line
(list items: ``3.1. Title``), or when the next word starts with a lower-case letter
(``approx. five``, ``Wait... what``). Decimal numbers (``3.14``), URLs and ``e.g.,`` have no
whitespace after the period, so they are never cut.

Not done (each a known miss, which costs a T5 sample at most a sentence boundary): a single line
break is not a boundary (hard-wrapped text keeps its sentences whole; lines without punctuation,
such as headings or table rows, join the next sentence, up to the next paragraph break); ``…``,
``;`` and ``:`` end nothing; an unlisted abbreviation before a capital is cut (``Gen. Smith`` is
listed, ``Adm. Smith`` is not) and a listed one that does end a sentence is not (``... in the U.S.
The``); a sentence ending in a one- or two-digit number followed by a capital is not cut
(``He counted to 10. Then``); after ``。`` a closing quote keeps Japanese quotations whole
(``「はい。」と言った。`` is one sentence) but so also keeps ``「はい。」「いいえ。」`` together; no
language models (Thai, written without sentence punctuation, is one sentence per paragraph).

The pieces are consecutive slices of the text: ``"".join(split_sentences(text)) == text``. The
whitespace between two sentences starts the second (GPT-2 BPE attaches a space to the word after
it, so ``" The"`` keeps its id), and every piece but a lone one has a non-whitespace character.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# megatron-core's helpers.cpp (LONG_SENTENCE_LEN): a document with several sequences of which one is
# longer than this is skipped entirely by the BERT and T5 sample maps, so longer sentences are cut.
MAX_SENTENCE_TOKENS = 512

_CLOSERS = "\"'”’“»›)]}」』）】〕〉》〗〙〛＂＇"
_CJK_ENDS = "。！？"
# A terminator run with its closing quotes, followed by whitespace; a paragraph break; a CJK terminator
# directly followed by text. The leading lookahead lets the scan skip ahead to those characters (4x faster).
_CANDIDATE = re.compile(
    rf"(?=[.!?{_CJK_ENDS}\n])(?:"
    rf"(?P<end>[.!?{_CJK_ENDS}]+(?P<close>[{re.escape(_CLOSERS)}]*))(?=\s)"
    r"|(?P<para>\n[^\S\n]*\n)"
    rf"|(?P<cjk>[{_CJK_ENDS}]+)(?![\s{_CJK_ENDS}{re.escape(_CLOSERS)}]))"
)
_WORD_BEFORE = re.compile(r"[\w.]*\w\Z")  # the word a period ends, with inner periods ("e.g", "3.1")
_NEXT = re.compile(r"\s*(\S)")
_LIST_NUMBER = re.compile(r"(?:\d+\.)*\d+")
_SHORT_NUMBER = re.compile(r"\d{1,2}")

# Words written with a period that rarely ends a sentence, as they are usually written; a capitalized first
# letter (sentence start: "E.g.", "Vgl.") matches too. Case matters: "No." is "number", "no." is a word.
# Single letters are not listed: every one is taken as an initial.
_ABBREVIATIONS_BY_LANGUAGE = {
    "en": "Mr Mrs Ms Mx Dr Drs Prof Sr Jr St Mt Ft Gen Gov Col Capt Cmdr Lt Sgt Rev Hon Pres Rep Sen Supt e.g i.e "
          "cf vs viz approx ca No Nos Vol Vols Fig Figs Eq Eqs Ch Sec Art Dept Univ Inc Ltd Co Corp Bros Jan Feb Mar "
          "Apr Jun Jul Aug Sep Sept Oct Nov Dec U.S U.K U.N a.m p.m Ph.D pp op",
    "de": "z.B d.h u.a o.ä s.o s.u u.U v.a bzw vgl ggf evtl inkl zzgl bspw sog Nr Hr Fr Str Abs Bd Jh Tel",
    "es/pt/it/fr": "Sra Srta Sres Dra Profa Ud Uds Vd Vds Dña Av Avda pág núm aprox p.ej EE.UU Lic Ing Sto Sta "
                   "Exmo Exma Dott Sig Mme Mlle MM env",
}
ABBREVIATIONS = frozenset(w for words in _ABBREVIATIONS_BY_LANGUAGE.values() for w in words.split())


def split_sentences(text: str) -> list[str]:
    """Cut ``text`` into sentences (see the module docstring); their concatenation is ``text``."""
    cuts = []
    for m in _CANDIDATE.finditer(text):
        if m.group("para") is not None:
            cut = m.start()
            while cut > 0 and text[cut - 1].isspace():
                cut -= 1  # the whitespace before the break goes with the next paragraph too
        elif m.group("cjk") is not None:
            cut = m.end()
        elif _ends_sentence(text, m):
            cut = m.end("end")
        else:
            continue
        if cut > 0 and (not cuts or cut > cuts[-1]) and _NEXT.match(text, cut):  # text follows the cut
            cuts.append(cut)
    if not cuts:
        return [text]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _ends_sentence(text: str, m: re.Match) -> bool:
    """Whether the terminator run ``m`` (followed by whitespace) ends a sentence."""
    run = m.group("end")
    if m.group("close") or run.strip("."):
        return True  # !, ?, CJK ends, or a quote after the period: always a sentence end
    following = _NEXT.match(text, m.end())
    if following is not None and following.group(1).islower():
        return False  # "approx. five", "Wait... what"
    if len(run) > 1:
        return True  # an ellipsis before a capital: take it as an end
    start = m.start("end")
    lo = max(0, start - 32)
    token_start = max(text.rfind(" ", lo, start), text.rfind("\n", lo, start)) + 1 or lo
    word = _WORD_BEFORE.search(text, token_start, start)
    if word is None:
        return True
    w = word.group()
    if w in ABBREVIATIONS or (w[:1].isupper() and w[:1].lower() + w[1:] in ABBREVIATIONS):
        return False
    if len(w) == 1 and w.isalpha():
        return False  # initials, "z. B."
    if _SHORT_NUMBER.fullmatch(w):
        return False  # ordinals: "am 1. Januar", "el 2. de"
    if not _LIST_NUMBER.fullmatch(w):
        return True
    line_start = text.rfind("\n", 0, word.start()) + 1
    return bool(text[line_start : word.start()].strip())  # a number that starts its line: "3.1. Title"


def cut_long_sequences(
    sequence_lengths: Sequence[int], doc_num_sequences: Sequence[int], max_tokens: int = MAX_SENTENCE_TOKENS
) -> tuple[list[int], list[int]] | None:
    """Cut every sequence longer than ``max_tokens`` into pieces of ``max_tokens`` and a remainder.

    Only the index changes: the tokens stay where they are, a long sequence's entry becomes several.
    Returns the new ``(sequence_lengths, doc_num_sequences)``, or None when no sequence is too long.
    """
    if not len(sequence_lengths) or max(sequence_lengths) <= max_tokens:
        return None
    lengths: list[int] = []
    counts: list[int] = []
    i = 0
    for n in doc_num_sequences:
        first = len(lengths)
        for length in sequence_lengths[i : i + n]:
            length = int(length)
            while length > max_tokens:
                lengths.append(max_tokens)
                length -= max_tokens
            lengths.append(length)
        i += n
        counts.append(len(lengths) - first)
    return lengths, counts
