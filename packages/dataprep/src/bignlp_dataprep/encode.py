"""JSONL lines → token arrays, in this process or in a pool of worker processes.

The unit of work is a ``LineBatch`` (about a megabyte of whole lines). The same
function encodes it everywhere, and results are consumed in input order, so the
output is byte-identical for any number of workers. Workers parse the JSON too:
they get the file name and first line number with the bytes, so their errors
still say ``FILE:LINE``. This module does not import numpy (plain ``array``
does the packing), which keeps a worker's start-up short; only a tokenizer that returns
numpy arrays (``encode_batch_flat``: SentencePiece) is packed with numpy.
"""

from __future__ import annotations

import array
import json
import multiprocessing
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from bignlp_contracts import InputError
from bignlp_tokenizers import Tokenizer

from .readers import LineBatch
from .sentences import cut_long_sequences, split_sentences


@dataclass(frozen=True)
class EncodedKey:
    """One JSON key's part of a batch, ready for ``IndexedDatasetWriter.add_documents``."""

    tokens: bytes  # little-endian, in the .bin dtype
    sequence_lengths: array.array  # int32, one per non-empty sentence (or an int32 numpy array)
    doc_num_sequences: array.array  # int64, one per document (or an int64 numpy array)


@dataclass(frozen=True)
class EncodedBatch:
    """The result for one ``LineBatch``: per-key token data plus counts for progress and the summary."""

    num_documents: int
    text_bytes: int
    raw_bytes: int
    keys: dict[str, EncodedKey]
    skipped: dict[str, int] = field(default_factory=dict)  # reason → lines dropped (on_error=skip)


@dataclass(frozen=True)
class EncodeOptions:
    """The per-run settings every worker needs (small and picklable)."""

    json_keys: tuple[str, ...]
    append_eod: bool
    typecode: str  # array module code of the .bin dtype: "H" (uint16) or "i" (int32)
    on_error: str = "fail"  # or "skip" (see config.PreprocessConfig.on_error)
    split_sentences: bool = False  # see config.PreprocessConfig.split_sentences


# Why a line was dropped under on_error=skip (the keys of the manifest's summary.skipped).
SKIP_REASONS = ("malformed_json", "missing_key", "bad_value", "invalid_utf8", "empty_document")
_SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape turns invalid UTF-8 bytes into


def _values(doc: dict, keys: Sequence[str]) -> tuple[list, tuple[str, str] | None]:
    """The document's value for every key, or the first problem as (reason, message)."""
    values = []
    for key in keys:
        try:
            value = doc[key]
        except KeyError:
            have = ", ".join(map(repr, doc)) or "no keys"
            return values, ("missing_key", f"no key {key!r} (has: {have})")
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))):
            return values, ("bad_value", f"key {key!r} must be a string or a list of strings, "
                                         f"got {type(value).__name__}")
        values.append(value)
    return values, None


def _sentences(
    batch: LineBatch, keys: Sequence[str], skip: bool = False, split: bool = False
) -> tuple[int, dict[str, list[str]], dict[str, list[int]], dict[str, int]]:
    """Parse the batch's lines: every key's sentences, flat, how many each document has, and skips.

    Without ``skip`` the first bad line is an InputError naming FILE:LINE; with it the
    line is dropped and counted by reason, and so is a document whose values are all empty.
    With ``split`` a string value is cut into sentences (``sentences.split_sentences``); a list
    value is already a list of sentences and is taken as it is.
    """
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    bad_utf8 = False
    try:
        text = batch.data.decode("utf-8")
    except UnicodeDecodeError:  # found line by line below, so the first bad line of any kind is reported
        text, bad_utf8 = batch.data.decode("utf-8", "surrogateescape"), True
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if batch.first_line == 1 and lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]  # a UTF-8 byte order mark is not JSON
    sentences: dict[str, list[str]] = {k: [] for k in keys}
    counts: dict[str, list[int]] = {k: [] for k in keys}
    num_documents = 0
    for lineno, line in enumerate(lines, start=batch.first_line):
        if not line.strip():
            continue  # blank lines (Megatron would stop with an error) are not documents
        if bad_utf8 and _SURROGATE.search(line):
            if not skip:
                try:
                    line.encode("utf-8", "surrogateescape").decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"{batch.source}:{lineno}: invalid UTF-8 ({exc.reason} at byte {exc.start} "
                                     "of the line)") from None
            skipped["invalid_utf8"] += 1
            continue
        values: list = []
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            what = exc.msg.removesuffix(" starting at")  # json says "... starting at"; the column says where
            problem: tuple[str, str] | None = ("malformed_json", f"malformed JSON ({what} at column {exc.colno})")
        else:
            if isinstance(doc, dict):
                values, problem = _values(doc, keys)
            else:
                problem = ("malformed_json", f"expected a JSON object, got {type(doc).__name__}")
        if problem is None and skip and not any(v if isinstance(v, str) else any(v) for v in values):
            problem = ("empty_document", "")  # under fail an empty document is kept, as Megatron does
        if problem is not None:
            if not skip:
                raise InputError(f"{batch.source}:{lineno}: {problem[1]}")
            skipped[problem[0]] += 1
            continue
        num_documents += 1
        for key, value in zip(keys, values):
            if isinstance(value, str) and split:
                parts = split_sentences(value)
                sentences[key].extend(parts)
                counts[key].append(len(parts))
            elif isinstance(value, str):
                sentences[key].append(value)
                counts[key].append(1)
            else:
                sentences[key].extend(value)
                counts[key].append(len(value))
    return num_documents, sentences, counts, skipped


def encode_batch(batch: LineBatch, tokenizer: Tokenizer, options: EncodeOptions) -> EncodedBatch:
    """Megatron's ``Encoder.encode`` for a batch of lines.

    Per document and key: each sentence that tokenizes to something becomes a
    sequence; with ``append_eod`` a non-empty document's last sequence gets the
    EOD token; an empty document still counts (its index entry repeats). With ``split_sentences``
    every string is first cut into sentences, and then every sequence (the EOD included) longer than
    ``MAX_SENTENCE_TOKENS`` is cut into pieces of at most that many tokens.
    """
    num_documents, sentences, counts, skipped = _sentences(batch, options.json_keys, options.on_error == "skip",
                                                           options.split_sentences)
    eod = tokenizer.eod_id
    out = {}
    encode_flat = getattr(tokenizer, "encode_batch_flat", None)
    for key in options.json_keys:
        if encode_flat is not None:
            out[key] = _cut_long(_assemble_flat(*encode_flat(sentences[key]), counts[key], options, eod), options)
            continue
        ids = tokenizer.encode_batch(sentences[key])
        flat: list[int] = []
        lengths: list[int] = []
        doc_num_sequences: list[int] = []
        i = 0
        for n in counts[key]:
            first = len(lengths)
            for sentence_ids in ids[i : i + n]:
                if sentence_ids:
                    flat += sentence_ids
                    lengths.append(len(sentence_ids))
            i += n
            if options.append_eod and len(lengths) > first:
                flat.append(eod)
                lengths[-1] += 1
            doc_num_sequences.append(len(lengths) - first)
        out[key] = _cut_long(EncodedKey(
            tokens=_little_endian(array.array(options.typecode, flat)),
            sequence_lengths=array.array("i", lengths),
            doc_num_sequences=array.array("q", doc_num_sequences),
        ), options)
    return EncodedBatch(num_documents, len(batch.data), batch.raw_bytes, out, skipped)


def _cut_long(part: EncodedKey, options: EncodeOptions) -> EncodedKey:
    """With ``split_sentences``, the index entries of ``part`` with long sequences cut (same tokens)."""
    if not options.split_sentences:
        return part
    cut = cut_long_sequences(part.sequence_lengths, part.doc_num_sequences)
    if cut is None:
        return part
    return EncodedKey(part.tokens, array.array("i", cut[0]), array.array("q", cut[1]))


def _assemble_flat(flat, lengths, counts: list[int], options: EncodeOptions, eod: int) -> EncodedKey:
    """``encode_batch``'s per-document rules, vectorized, for a tokenizer that returns flat arrays.

    ``flat`` holds every sentence's ids concatenated (an integer numpy array), ``lengths`` the
    number of ids of each sentence and ``counts`` the number of sentences of each document.
    No Python object per token is made, which is most of the cost for a small vocabulary.
    """
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    per_doc = np.asarray(counts, dtype=np.int64)
    doc_of = np.repeat(np.arange(len(per_doc)), per_doc)
    nonempty = lengths > 0
    doc_num_sequences = np.bincount(doc_of[nonempty], minlength=len(per_doc)).astype(np.int64)
    sequence_lengths = lengths[nonempty].astype(np.int32)
    tokens = np.asarray(flat)
    if options.append_eod and len(sequence_lengths):
        has = doc_num_sequences > 0
        sequence_lengths[np.cumsum(doc_num_sequences)[has] - 1] += 1
        ends = np.cumsum(lengths)[np.cumsum(per_doc)[has] - 1]  # offset after each non-empty document
        tokens = np.insert(tokens, ends, eod)
    dtype = "<u2" if options.typecode == "H" else "<i4"
    return EncodedKey(tokens.astype(dtype).tobytes(), sequence_lengths, doc_num_sequences)


def _little_endian(values: array.array) -> bytes:
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


# Per-process state of a worker (set once by the pool initializer).
_WORKER: tuple[Tokenizer, EncodeOptions] | None = None


# One library thread per worker process, so N workers keep N cores busy (not N x cores threads):
# Hugging Face tokenizers (Rust, rayon) reads these before its first batch; SentencePiece takes a
# num_threads argument (set_num_threads); our GPT-2 BPE (tiktoken) encodes on the calling thread.
SINGLE_THREAD_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _init_worker(tokenizer: Tokenizer, options: EncodeOptions) -> None:
    global _WORKER
    # Ctrl-C is the parent's to handle (it stops the pool); workers would only print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(SINGLE_THREAD_ENV)
    if hasattr(tokenizer, "set_num_threads"):
        tokenizer.set_num_threads(1)
    _WORKER = (tokenizer, options)


def _encode_in_worker(batch: LineBatch) -> EncodedBatch:
    assert _WORKER is not None, "worker not initialized"
    return encode_batch(batch, *_WORKER)


def encode_batches(
    batches: Iterable[LineBatch],
    tokenizer: Tokenizer,
    options: EncodeOptions,
    *,
    workers: int,
) -> Iterator[EncodedBatch]:
    """Encode every batch, yielding results in input order.

    With ``workers > 1`` a spawn-context process pool does the work (the
    tokenizer is pickled to each worker once, which is cheaper than rebuilding
    it there); at most
    ``2 * workers`` batches are in flight, so memory stays bounded however
    large the input (``Pool.imap`` would read ahead without limit). A
    SentencePiece tokenizer with up to ``THREADED_MAX_WORKERS`` workers runs in
    this process on ``workers`` library threads instead (``_encode_in_threads``).
    """
    if workers <= 1:
        for batch in batches:
            yield encode_batch(batch, tokenizer, options)
        return
    if _use_threads(tokenizer, workers):
        yield from _encode_in_threads(batches, tokenizer, options, workers)
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe with threads (tqdm, tiktoken)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(tokenizer, options))
    pending: deque[Future] = deque()
    try:
        for batch in batches:
            pending.append(pool.submit(_encode_in_worker, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# Up to this many workers, a tokenizer that encodes a batch on its own threads with the GIL released
# (SentencePiece: ``set_num_threads``) runs in this process: no worker start-up (~0.15 s of CPU each) and
# no pickling, about 2/3 of the pool's CPU time here. The two Python threads that parse and pack hold
# the GIL, which would cap the throughput beyond about this many library threads: then a pool of
# single-threaded worker processes scales instead.
THREADED_MAX_WORKERS = 8


def _use_threads(tokenizer: Tokenizer, workers: int) -> bool:
    return hasattr(tokenizer, "set_num_threads") and workers <= THREADED_MAX_WORKERS


def _encode_in_threads(
    batches: Iterable[LineBatch], tokenizer: Tokenizer, options: EncodeOptions, workers: int
) -> Iterator[EncodedBatch]:
    """In this process: the library encodes each batch on ``workers`` threads (the GIL released), while a
    second Python thread parses the next batch; results in input order, at most 3 batches in flight."""
    from concurrent.futures import ThreadPoolExecutor

    tokenizer.set_num_threads(workers)  # type: ignore[attr-defined]
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(2) as pool:
        try:
            for batch in batches:
                pending.append(pool.submit(encode_batch, batch, tokenizer, options))
                if len(pending) >= 3:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
