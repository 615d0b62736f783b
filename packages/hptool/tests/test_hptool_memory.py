"""The memory model (perf.predict_memory) against what real bignlp-train runs hold, per rank.

Each case trains a tiny GPT (or T5) for 2 steps with ``bignlp-train pretrain`` (1 or 2 gloo
processes); step 2's ``memory`` records in metrics.jsonl give every rank's parameters, gradients,
optimizer state and peak activations (bignlp_train/memory.py). The worst rank's total must be
within 10% of the prediction for the same layout. The data: 100 documents of the shipped corpus
through ``bignlp-dataprep`` with a byte-level GPT-2 vocabulary (257 tokens), so that the
vocabulary does not swamp the transformer layers in so small a model.

    python packages/hptool/tests/test_hptool_memory.py     # the table of every case (README)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from bignlp_hptool.basecfg import ModelShape
from bignlp_hptool.hardware import GPU_KINDS
from bignlp_hptool.perf import ACCOUNTED, Layout, predict_memory
from bignlp_hptool.search import read_memory
from hptool_helpers import corpus_slice, script

from bignlp_models.gpt import GPTConfig
from bignlp_models.spec import get_family
from bignlp_models.t5 import T5Config

BOUND = 0.10
VOCAB = {"gpt": 257, "t5": 209}  # the datasets' tokenizers (T5: 109 WordPiece tokens + 100 sentinels)
# a GPT small enough to step in a fraction of a second whose layers still hold most of the activations
SEQ, HIDDEN, HEADS, LAYERS = 64, 64, 4, 4
SEQ_DEC = 32  # T5: 2 encoder + 2 decoder layers of the same width, the decoder reading 32 tokens


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    layout: Layout
    precision: str = "32"
    family: str = "gpt"


def _layout(tp=1, pp=1, dp=1, mbs=2, gbs=None, recompute=None, sp=False) -> Layout:
    gbs = gbs or mbs * dp * (4 if pp > 1 else 2)
    k = LAYERS // pp if recompute == "full" else 0
    return Layout(tp=tp, pp=pp, dp=dp, mbs=mbs, gbs=gbs, sp=sp, recompute=recompute, act_ckpt_layers=k)


CASES = [
    Case("1 process", _layout()),
    Case("1 process, selective", _layout(recompute="selective")),
    Case("1 process, full", _layout(recompute="full")),
    Case("1 process, bf16", _layout(), "bf16"),
    Case("1 process, bf16, selective", _layout(recompute="selective"), "bf16"),
    Case("DP=2", _layout(dp=2)),
    Case("DP=2, bf16", _layout(dp=2), "bf16"),
    Case("DP=2, 1 micro-batch", _layout(dp=2, gbs=4)),
    Case("TP=2", _layout(tp=2)),
    Case("TP=2+SP, selective", _layout(tp=2, sp=True, recompute="selective")),
    Case("PP=2 (1F1B, 4 micro-batches)", _layout(pp=2)),
    Case("PP=2, full", _layout(pp=2, recompute="full")),
    Case("T5, 1 process", _layout(), family="t5"),
    Case("T5, TP=2, selective, bf16", _layout(tp=2, recompute="selective"), "bf16", family="t5"),
    Case("T5, PP=2", _layout(pp=2), family="t5"),
]
FAST = {"1 process", "1 process, bf16, selective", "DP=2", "TP=2", "PP=2 (1F1B, 4 micro-batches)", "T5, 1 process"}


def _byte_vocabulary(out: Path) -> tuple[Path, Path]:
    """GPT-2's 256 byte symbols (in GPT-2's order) and <|endoftext|>, no merges: one token per byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    for b in range(256):
        if b not in bs:  # the bytes without a printable symbol map to 256, 257, ...
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    vocab = {chr(c): i for i, c in enumerate(cs)} | {"<|endoftext|>": 256}
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    return out / "vocab.json", out / "merges.txt"


def _preprocess(*args: str) -> None:
    res = subprocess.run([script("bignlp-dataprep"), "preprocess", "--json-keys", "text", *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def make_data(tmp: Path, num_docs: int = 100) -> str:
    """The corpus slice tokenized byte by byte; returns the dataset prefix."""
    vocab, merges = _byte_vocabulary(tmp / "tok")
    _preprocess("--input", str(corpus_slice(tmp, num_docs)), "--output-prefix", str(tmp / "d" / "bytes"),
                "--tokenizer-type", "gpt2-bpe", "--vocab-file", str(vocab), "--merges-file", str(merges),
                "--append-eod")
    return str(tmp / "d" / "bytes_text_document")


def make_t5_data(tmp: Path, num_docs: int = 100) -> str:
    """The slice in a character-level WordPiece vocabulary (letters, ##letters, digits, punctuation) + 100
    sentinels: about 210 tokens. Returns the dataset prefix."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punct = [chr(c) for c in range(33, 127) if not chr(c).isalnum()]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *punct]
    (tmp / "t5tok").mkdir(parents=True, exist_ok=True)
    (tmp / "t5tok" / "vocab.txt").write_text("\n".join(words) + "\n")
    _preprocess("--input", str(corpus_slice(tmp, num_docs)), "--output-prefix", str(tmp / "t5d" / "chars"),
                "--tokenizer-type", "bert-wordpiece-lowercase", "--vocab-file", str(tmp / "t5tok" / "vocab.txt"),
                "--num-sentinel-tokens", "100", "--split-sentences")
    return str(tmp / "t5d" / "chars_text_document")


def shape(family: str = "gpt", vocab_size: int = 257) -> ModelShape:
    """The tiny model the cases train, as the memory model reads it (vocabulary: the dataset's, unpadded)."""
    if family == "gpt":
        arch = GPTConfig(vocab_size=vocab_size, max_position_embeddings=SEQ, num_layers=LAYERS, hidden_size=HIDDEN,
                         num_attention_heads=HEADS, ffn_hidden_size=4 * HIDDEN, kv_channels=HIDDEN // HEADS)
        return ModelShape("gpt", arch, SEQ, None, get_family("gpt").count_parameters(arch))
    arch = T5Config(vocab_size=vocab_size, hidden_size=HIDDEN, num_attention_heads=HEADS, kv_channels=HIDDEN // HEADS,
                    encoder_num_layers=LAYERS // 2, decoder_num_layers=LAYERS // 2,
                    encoder_ffn_hidden_size=2 * HIDDEN, decoder_ffn_hidden_size=2 * HIDDEN, max_position_embeddings=SEQ)
    return ModelShape("t5", arch, SEQ, SEQ_DEC, get_family("t5").count_parameters(arch))


def train_overrides(case: Case, data: str, run_dir: Path) -> list[str]:
    lay = case.layout
    rc = {None: ["null", "null", "null"], "selective": ["selective", "null", "null"],
          "full": ["full", "block", str(lay.act_ckpt_layers)]}[lay.recompute]
    return [f"model.data.data_prefix=[1.0,{data}]", f"exp_manager.explicit_log_dir={run_dir}",
            "exp_manager.create_checkpoint_callback=false", "trainer.accelerator=cpu",
            f"trainer.precision={case.precision}", "trainer.max_steps=2", "trainer.memory_step=2",
            "trainer.log_every_n_steps=1", "trainer.val_check_interval=2", "trainer.limit_val_batches=0",
            "trainer.limit_test_batches=0", "model.data.splits_string=\"100,0,0\"",
            f"model.micro_batch_size={lay.mbs}", f"model.global_batch_size={lay.gbs}",
            f"model.tensor_model_parallel_size={lay.tp}", f"model.pipeline_model_parallel_size={lay.pp}",
            f"model.sequence_parallel={str(lay.sp).lower()}", f"model.max_position_embeddings={SEQ}",
            f"model.hidden_size={HIDDEN}", f"model.num_attention_heads={HEADS}",
            *([f"model.encoder_seq_length={SEQ}", f"model.num_layers={LAYERS}", f"model.ffn_hidden_size={4 * HIDDEN}"]
              if case.family == "gpt" else
              [f"model.seq_length={SEQ}", f"model.data.seq_length_dec={SEQ_DEC}", f"model.num_layers={LAYERS // 2}",
               f"model.ffn_hidden_size={2 * HIDDEN}", f"model.kv_channels={HIDDEN // HEADS}"]),
            f"model.activations_checkpoint_granularity={rc[0]}", f"model.activations_checkpoint_method={rc[1]}",
            f"model.activations_checkpoint_num_layers={rc[2]}"]


def run_case(case: Case, data: dict[str, str], tmp: Path) -> dict:
    """Train the case (``data``: prefix by family); return the worst rank's measured ``memory/*`` values."""
    run_dir = tmp / case.name.replace(" ", "_").replace(",", "").replace("=", "").replace("(", "").replace(")", "")
    lay = case.layout
    nproc = lay.tp * lay.pp * lay.dp
    config = "gpt3/tiny-cpu" if case.family == "gpt" else "t5/tiny-cpu"
    cmd = [script("bignlp-train"), "pretrain", "--config", config, "--nproc-per-node", str(nproc),
           *train_overrides(case, data[case.family], run_dir)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, (case.name, res.stdout[-2000:], res.stderr[-3000:])
    measured = read_memory(run_dir / "metrics.jsonl")
    assert measured is not None, f"{case.name}: no memory record in metrics.jsonl"
    return measured


def compare(case: Case, measured: dict) -> tuple[float, str]:
    """(relative error of the total, a table row with the components in KiB: predicted/measured)."""
    kind = dataclasses.replace(GPU_KINDS["cpu"], precision=case.precision)
    vocab = VOCAB[case.family]
    _, parts = predict_memory(shape(case.family, vocab), case.layout, kind)
    predicted = {"params": parts["params"], "grads": parts["grads"], "optimizer": parts["optimizer"],
                 "activations": parts["activations"] + parts["logits"]}
    got = {"params": measured["memory/params_bytes"], "grads": measured["memory/grads_bytes"],
           "optimizer": measured["memory/optimizer_bytes"], "activations": measured["memory/activations_peak_bytes"]}
    total_p, total_m = sum(parts[k] for k in ACCOUNTED), measured["memory/total_peak_bytes"]
    err = (total_p - total_m) / total_m
    cells = " | ".join(f"{predicted[k] / 1024:,.0f} / {got[k] / 1024:,.0f}" for k in predicted)
    return err, (f"| {case.name} | {case.precision} | {cells} | {total_p / 1024:,.0f} / {total_m / 1024:,.0f} | "
                 f"{100 * err:+.1f}% |")


HEADER = ("| case | precision | params KiB (pred / meas) | grads | optimizer | activations | total | error |\n"
          "|---|---|---|---|---|---|---|---|")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("memdata")
    return {"gpt": make_data(tmp), "t5": make_t5_data(tmp)}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=() if c.name in FAST else pytest.mark.slow)
                                  for c in CASES])
def test_predicted_memory_within_10_percent_of_measured(case, data, tmp_path):
    err, row = compare(case, run_case(case, data, tmp_path))
    print(f"\n{HEADER}\n{row}")
    assert abs(err) <= BOUND, row


def main() -> None:
    """Every case, one table (what the README shows)."""
    with tempfile.TemporaryDirectory(prefix="hptool-memory-") as tmp:
        data = {"gpt": make_data(Path(tmp)), "t5": make_t5_data(Path(tmp))}
        print(HEADER)
        for case in [c for c in CASES if not sys.argv[1:] or any(a in c.name for a in sys.argv[1:])]:
            print(compare(case, run_case(case, data, Path(tmp)))[1], flush=True)


if __name__ == "__main__":
    main()
