"""Shared helpers for the dataprep tests (a plain module: a second conftest.py would clash with the root one)."""

from __future__ import annotations

import atexit
import functools
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import zstandard

from bignlp_dataprep.config import PreprocessConfig

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"
VOCAB = DATA / "gpt2" / "vocab.json"
MERGES = DATA / "gpt2" / "merges.txt"
DEMO = DATA / "corpus" / "demo-en.jsonl.gz"
OPENAI_GPT2 = REPO.parent / "shared" / "data" / "gpt2-openai"
EOD = 50256

# Texts that stress the pre-tokenizer: contractions, digits, whitespace runs, unicode, special-token text.
EDGE_TEXTS = [
    "Hello world! It's 2024, isn't it? We'll see; they've gone.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand CRLF\n\n\nruns",
    "ünïcödé, 日本語のテキスト, emoji 😀👍🏽, Zalgo z̷̢a̶l̵g̴o",
    "special <|endoftext|> text inside a document",
    "1234567890 3.14159 1e-5 0x1F",
    " ",
    "\u00a0non-breaking\u2028line separator\u0085next line",
]


@functools.cache
def demo_lines(n: int) -> tuple[str, ...]:
    """The first ``n`` lines of the shipped demo corpus, newline-terminated."""
    with gzip.open(DEMO, "rt", encoding="utf-8") as f:
        return tuple(line for _, line in zip(range(n), f))


@functools.cache
def slice_file(n: int, compression: str = "none") -> Path:
    """The first ``n`` demo documents plus the edge texts, as .jsonl / .jsonl.gz / .jsonl.zst."""
    data = ("".join(demo_lines(n)) + "".join(json.dumps({"text": t}) + "\n" for t in EDGE_TEXTS)).encode()
    root = Path(tempfile.mkdtemp(prefix="bignlp-dataprep-test-"))
    atexit.register(shutil.rmtree, root, True)
    if compression == "gzip":
        path = root / "slice.jsonl.gz"
        path.write_bytes(gzip.compress(data))
    elif compression == "zstd":
        path = root / "slice.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path = root / "slice.jsonl"
        path.write_bytes(data)
    return path


def texts_of(path: Path, key: str = "text") -> list:
    """The ``key`` values of a plain .jsonl file, in order."""
    return [json.loads(line)[key] for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def config(inputs: Sequence[Path | str], prefix: Path, **kw) -> PreprocessConfig:
    """A PreprocessConfig for the shipped GPT-2 files."""
    kw.setdefault("append_eod", True)
    return PreprocessConfig(
        input=tuple(str(p) for p in inputs), output_prefix=str(prefix), vocab_file=str(VOCAB),
        merges_file=str(MERGES), **kw,
    )


@functools.cache
def hf_encoder() -> Callable[[list[str]], list[list[int]]]:
    """Reference GPT-2 BPE independent of ours: Hugging Face ``tokenizers`` (Rust, its own BPE)."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer(str(VOCAB), str(MERGES), add_prefix_space=False)
    return lambda texts: [e.ids for e in tok.encode_batch(list(texts))]


def openai_encoder(cache_dir: Path) -> Callable[[list[str]], list[list[int]]] | None:
    """tiktoken's own ``gpt2`` encoding from OpenAI's original files, offline; None if they are absent."""
    if not (OPENAI_GPT2 / "encoder.json").is_file():
        return None
    import tiktoken
    import tiktoken.registry

    # tiktoken caches downloads under the sha1 of their URL (FACTS.md).
    (cache_dir / "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6").write_bytes((OPENAI_GPT2 / "encoder.json").read_bytes())
    (cache_dir / "6d1cbeee0f20b3d9449abfede4726ed8212e3aee").write_bytes((OPENAI_GPT2 / "vocab.bpe").read_bytes())
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    try:
        enc = tiktoken.get_encoding("gpt2")
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR")
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old
    return lambda texts: [enc.encode_ordinary(t) for t in texts]


def megatron_documents(docs: list, encode: Callable, *, append_eod: bool, eod: int = EOD):
    """Megatron-LM's ``Encoder.encode`` written out again, over a reference encoder: (tokens, lengths) per doc."""
    out = []
    for value in docs:
        sentences = value if isinstance(value, list) else [value]
        ids, lengths = [], []
        for sentence_ids in encode(sentences) if sentences else []:
            if sentence_ids:
                ids += sentence_ids
                lengths.append(len(sentence_ids))
        if ids and append_eod:
            ids.append(eod)
            lengths[-1] += 1
        out.append((ids, lengths))
    return out


def megatron_core_files(tmp: Path, documents, dtype) -> tuple[bytes, bytes]:
    """The .bin and .idx bytes megatron-core's IndexedDatasetBuilder writes for ``documents``."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    tmp.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(str(tmp / "ref.bin"), dtype=dtype)
    for tokens, lengths in documents:
        builder.add_document(tokens, lengths)
    builder.finalize(str(tmp / "ref.idx"))
    return (tmp / "ref.bin").read_bytes(), (tmp / "ref.idx").read_bytes()


# --- the local HTTP fixture server and The Pile in its real layout --------------------------------------------------


def start_fixture_server(root: Path):
    """Start ``fixture_server.py`` serving ``root`` as a subprocess; return (base URL, Popen)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fixture_server.py")), str(root)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return f"http://127.0.0.1:{port}", proc


def stop_fixture_server(proc) -> None:
    """Stop the server by its PID."""
    import signal

    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    proc.stdout.close()


PILE_SHARDS = 3


def pile_texts() -> list[bytes]:
    """The demo corpus cut into PILE_SHARDS contiguous JSONL shards (the plain text of 00, 01, 02)."""
    lines = demo_lines(100_000)
    size = -(-len(lines) // PILE_SHARDS)
    return ["".join(lines[i * size : (i + 1) * size]).encode() for i in range(PILE_SHARDS)]


def make_www(root: Path) -> Path:
    """The server's files: pile/NN.jsonl.zst (+ sha256sums), pile/NN.jsonl, gpt2/vocab.json + merges.txt."""
    import hashlib

    (root / "pile").mkdir(parents=True)
    (root / "gpt2").mkdir()
    sums = []
    for n, text in enumerate(pile_texts()):
        packed = zstandard.ZstdCompressor(level=3).compress(text)
        (root / "pile" / f"{n:02d}.jsonl.zst").write_bytes(packed)
        (root / "pile" / f"{n:02d}.jsonl").write_bytes(text)
        sums.append(f"{hashlib.sha256(packed).hexdigest()}  {n:02d}.jsonl.zst\n")
    (root / "pile" / "sha256sums.txt").write_text("".join(sums))
    shutil.copy(VOCAB, root / "gpt2" / "vocab.json")
    shutil.copy(MERGES, root / "gpt2" / "merges.txt")
    return root


def artifact_files(data_dir: Path) -> dict[str, bytes]:
    """The bytes of a dataset artifact's pairs and tokenizer files, by relative path."""
    paths = [*data_dir.glob("*.bin"), *data_dir.glob("*.idx"), *(data_dir / "tokenizer").glob("*")]
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(paths)}
