"""``bignlp-dataprep``: the command-line skin over the library (the only module importing click)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import click

from bignlp_contracts import exit_on_error
from bignlp_tokenizers import TOKENIZER_TYPES

from . import __version__
from .config import load_preprocess_config

PROG = "bignlp-dataprep"
_OVERRIDE = re.compile(r"^\+{0,2}[A-Za-z_][\w.]*=")


def expand_greedy(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """Rewrite ``--input a b`` as ``--input a --input b`` (argparse's ``nargs='+'``, which click lacks).

    Values are taken up to the next option, a ``key=value`` override, or ``--``.
    """
    out: list[str] = []
    greedy = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if greedy and not arg.startswith("-") and not _OVERRIDE.match(arg):
            out += [greedy, arg]
        elif arg in names:
            greedy = arg
            out.append(arg)
            if i + 1 < len(args):  # the flag's first value, taken as-is
                i += 1
                out.append(args[i])
        else:
            greedy = arg.partition("=")[0] if arg.partition("=")[0] in names else None
            out.append(arg)
        i += 1
    return out


class GreedyCommand(click.Command):
    """A command whose ``greedy`` options accept several values after one flag."""

    greedy: tuple[str, ...] = ("--input", "--json-keys")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_greedy(args, self.greedy))


def _echo_skipped(summary: dict) -> None:
    """The bad lines on_error=skip dropped, by reason (nothing when none were)."""
    if skipped := {k: n for k, n in summary.get("skipped", {}).items() if n}:
        click.echo(f"skipped {sum(skipped.values()):,} line(s): " + ", ".join(f"{k} {n:,}" for k, n in skipped.items()))


def _echo_artifact(manifest, artifact_dir: Path) -> None:
    """The artifact directory and its .bin/.idx paths."""
    from .preprocess import artifact_paths

    click.echo(f"artifact: {artifact_dir}")
    for path in artifact_paths(manifest, artifact_dir):
        click.echo(f"  {path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Turn raw JSONL text into a tokenized Megatron dataset artifact.

    The artifact (a directory with .bin/.idx pairs, the tokenizer files,
    config.yaml and manifest.json) is what bignlp-train reads. 'run' takes a
    whole corpus (The Pile, your own files) from download to the artifact;
    'preprocess' tokenizes JSONL files you already have (GPT-2 BPE, BERT
    WordPiece, SentencePiece or any tokenizer.json); 'train-tokenizer'
    trains a SentencePiece model on JSONL text; 'merge' joins datasets
    (partitions) into one; 'inspect' checks and describes an artifact.

    Example:

    \b
        bignlp-dataprep run --config gpt3/download_gpt3_pile data_dir=data/pile \\
          the_pile_url=https://mirror.example/pile/train file_numbers=0-2
        bignlp-dataprep preprocess --input corpus.jsonl.gz --output-prefix data/corpus \\
          --vocab-file vocab.json --merges-file merges.txt --append-eod --workers 8
        bignlp-dataprep train-tokenizer --input corpus.jsonl.gz --model-prefix bpe/sp --vocab-size 8000
        bignlp-dataprep merge --input parts/p0 parts/p1 --output-prefix data/corpus
        bignlp-dataprep inspect data/corpus_text_document --show 1
    """


@main.command(cls=GreedyCommand)
@click.option("--input", "inputs", multiple=True, metavar="FILE [FILE...]",
              help="JSONL input(s), one JSON object per line: .jsonl/.json, plain, .gz or .zst. "
                   "Several files after one flag or repeated flags; read in order into one dataset.")
@click.option("--output-prefix", metavar="DIR/NAME",
              help="Writes DIR/NAME_<key>_document.bin/.idx; DIR (created if missing) becomes the artifact "
                   "directory with tokenizer/, config.yaml and manifest.json.")
@click.option("--json-keys", multiple=True, metavar="KEY [KEY...]",
              help="JSON key(s) to tokenize, one dataset per key; a list value is a list of sentences. "
                   "[default: text]")
@click.option("--tokenizer-type", type=click.Choice(list(TOKENIZER_TYPES)), metavar="TYPE",
              help="Tokenizer: gpt2-bpe, bert-wordpiece (= bert-wordpiece-lowercase), bert-wordpiece-case, "
                   "sentencepiece, huggingface; Megatron's names (GPT2BPETokenizer, BertWordPieceLowerCase, "
                   "BertWordPieceCase, SentencePieceTokenizer) are accepted. [default: gpt2-bpe]")
@click.option("--vocab-file", metavar="PATH",
              help="gpt2-bpe: vocab.json (Hugging Face layout); bert-wordpiece: vocab.txt. Copied into the artifact.")
@click.option("--merges-file", metavar="PATH", help="GPT-2 merges.txt matching --vocab-file; copied into the artifact.")
@click.option("--tokenizer-model", metavar="X.model", help="sentencepiece: the model file; copied into the artifact.")
@click.option("--tokenizer-file", metavar="tokenizer.json",
              help="huggingface: a tokenizer.json (tokenizers.Tokenizer.from_file); copied into the artifact.")
@click.option("--eod-token", metavar="TOKEN",
              help="huggingface: the end-of-document token. [default: <|endoftext|>, else </s>]")
@click.option("--num-sentinel-tokens", type=click.IntRange(min=0), metavar="N",
              help="T5/mT5: append N sentinels <extra_id_0> ... after the vocabulary (100 for T5, as NeMo); a "
                   "SentencePiece model also gets the T5 roles it lacks (<cls>, <sep>, <mask>, <pad>, <bos>, "
                   "<eos>). The documents' token ids do not change; vocab_size and the manifest count them. "
                   "[default: 0]")
@click.option("--on-error", type=click.Choice(["fail", "skip"]),
              help="fail: stop at the first malformed JSON line, missing key or invalid UTF-8 (naming FILE:LINE). "
                   "skip: drop those lines and empty documents, counted per reason in the manifest. "
                   "[default: fail]")
@click.option("--split-sentences/--no-split-sentences", default=None,
              help="T5/BERT: cut every string into sentences (. ! ? and 。！？ ends, paragraph breaks; common "
                   "abbreviations and decimals kept whole; no NLTK), one sequence each; a sequence over 512 tokens "
                   "is cut into pieces of at most 512 (megatron-core skips a document holding one). [default: off]")
@click.option("--append-eod/--no-append-eod", default=None,
              help="Append the end-of-document token to every non-empty document (use it for GPT). [default: off]")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Tokenizing processes; the output is identical for any N. Fewer are started when the input "
                   "holds under 4 batches per worker (starting one costs ~0.2 s). [default: 1]")
@click.option("--batch-mb", type=click.FloatRange(min=0, min_open=True), metavar="MB",
              help="Megabytes of JSONL per worker task. [default: 1.0]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE.yaml",
              help="YAML file with any of the keys above (underscored: output_prefix, json_keys, ...). "
                   "Flags and KEY=VALUE overrides win over it.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def preprocess(config_file, overrides, inputs, **flags) -> None:
    """Tokenize JSONL files into Megatron .bin/.idx files (Megatron-LM's tools/preprocess_data.py).

    Each line is one document. Per --json-keys key, every sentence that
    tokenizes to something becomes a sequence (with --split-sentences,
    every sentence of a string); with --append-eod the document ends
    with <|endoftext|>. Trailing KEY=VALUE arguments
    override config keys (e.g. workers=4). manifest.json is written last:
    if it exists, the artifact is complete.

    Example:

    \b
        bignlp-dataprep preprocess --input shard-00.jsonl.zst shard-01.jsonl.zst \\
          --output-prefix data/pile --json-keys text --tokenizer-type gpt2-bpe \\
          --vocab-file gpt2/vocab.json --merges-file gpt2/merges.txt --append-eod --workers 16
        # T5: WordPiece with the 100 sentinels span corruption needs, no end of document
        bignlp-dataprep preprocess --input shard-00.jsonl.zst --output-prefix data/pile-t5 \\
          --tokenizer-type bert-wordpiece-case --vocab-file vocab.txt --num-sentinel-tokens 100 \\
          --split-sentences
    """
    from .preprocess import preprocess as run_preprocess

    for item in overrides:
        if "=" not in item:
            raise click.UsageError(f"unexpected argument {item!r}: overrides are KEY=VALUE (e.g. workers=4)")
    flags["input"] = inputs
    with exit_on_error(PROG):
        cfg = load_preprocess_config(config_file, overrides, flags)
        manifest = run_preprocess(cfg, progress=True)
    s = manifest.summary
    per_doc = s["num_tokens"] / s["num_documents"] if s["num_documents"] else 0.0
    click.echo(f"{s['num_documents']:,} documents, {s['num_tokens']:,} tokens ({per_doc:,.1f} tokens/doc), "
               f"{s['input_bytes'] / 1e6:,.2f} MB in {s['elapsed_s']:.1f} s ({s['mb_per_s']:.2f} MB/s)")
    if s.get("split_sentences"):
        seqs = sum(d["num_sequences"] for d in s["datasets"])
        click.echo(f"{seqs:,} sequences (sentences) in all, {seqs / max(1, s['num_documents']):,.1f} per document "
                   "and key")
    _echo_skipped(s)
    _echo_artifact(manifest, Path(cfg.output_prefix).parent)


@main.command("train-tokenizer", cls=GreedyCommand)
@click.option("--input", "inputs", multiple=True, required=True, metavar="FILE [FILE...]",
              help="Input(s), plain, .gz or .zst: JSONL (.jsonl/.json; every line of every document is a sentence) "
                   "or, with --input-format text, plain text.")
@click.option("--json-keys", multiple=True, metavar="KEY [KEY...]", help="JSON key(s) holding text. [default: text]")
@click.option("--input-format", type=click.Choice(["jsonl", "text"]), default="jsonl", show_default=True,
              help="jsonl: the --json-keys text of one JSON object per line; text: every line is a sentence.")
@click.option("--model-prefix", required=True, metavar="DIR/NAME", help="Writes DIR/NAME.model and DIR/NAME.vocab.")
@click.option("--model-type", type=click.Choice(["bpe", "unigram", "word", "char"]), default="bpe",
              show_default=True, help="SentencePiece algorithm.")
@click.option("--vocab-size", type=click.IntRange(min=1), default=8000, show_default=True, metavar="N",
              help="Pieces in the vocabulary, special ones included.")
@click.option("--character-coverage", type=click.FloatRange(0, 1, min_open=True), default=0.9995,
              show_default=True, metavar="F",
              help="Share of characters the vocabulary covers (1.0 for small alphabets, 0.9995 for CJK-rich text).")
@click.option("--pad-id", type=int, default=0, show_default=True, metavar="ID", help="Id of <pad> (-1: none).")
@click.option("--unk-id", type=int, default=1, show_default=True, metavar="ID", help="Id of <unk>.")
@click.option("--bos-id", type=int, default=2, show_default=True, metavar="ID", help="Id of <s> (-1: none).")
@click.option("--eos-id", type=int, default=3, show_default=True, metavar="ID",
              help="Id of </s> (-1: none); preprocess uses it as end of document.")
@click.option("--input-sentence-size", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Train on a random sample of N sentences (0: all).")
def train_tokenizer(inputs, json_keys, **args) -> None:
    """Train a SentencePiece tokenizer on JSONL text (the seed's train_tokenizer_args).

    The text is streamed into SentencePiece's trainer (no text file is
    written); long lines are cut at spaces to fit the trainer's sentence
    limit. The defaults are the seed's custom_dataset.yaml values
    (bpe, 8000, 0.9995, pad 0, unk 1, bos 2, eos 3).

    Example:

    \b
        bignlp-dataprep train-tokenizer --input corpus.jsonl.gz --model-prefix bpe/custom_sp_tokenizer \\
          --model-type bpe --vocab-size 8000 --character-coverage 0.9995
        bignlp-dataprep preprocess --input corpus.jsonl.gz --output-prefix data/custom \\
          --tokenizer-type sentencepiece --tokenizer-model bpe/custom_sp_tokenizer.model --append-eod
    """
    from .spm_train import TrainTokenizerConfig, train_sentencepiece

    with exit_on_error(PROG):
        cfg = TrainTokenizerConfig(input=inputs, json_keys=json_keys or ("text",), **args)
        model, vocab = train_sentencepiece(cfg)
    click.echo(f"tokenizer: {model}")
    click.echo(f"vocabulary: {vocab}")


@main.command()
@click.option("--config", "config_name", required=True, metavar="NAME_OR_PATH",
              help="Recipe: a shipped name (gpt3/download_gpt3_pile, t5/download_t5_pile, mt5/download_mc4, "
                   "generic/custom_dataset; task data: squad/v1.1, squad/v2.0, xquad, glue/<task>) or a YAML file "
                   "whose 'dataset' key is pile, mc4, custom_dataset, squad, xquad or glue.")
@click.option("--step", "step", default="all", show_default=True, metavar="STEP[,STEP...]",
              help="Steps to run: all, or a comma list of download, extract, tokenizer, preprocess, finalize. "
                   "download, extract and preprocess work per shard file on this process's share and skip files "
                   "already done; tokenizer trains the recipe's SentencePiece model once (train_tokenizer: the "
                   "first share to get there trains, the others wait for it; preprocess trains it too if needed); "
                   "finalize runs once, after every share, and writes the manifest. 'all' with --world-size > 1 "
                   "leaves finalize out.")
@click.option("--rank", type=click.IntRange(min=0), metavar="R",
              help="This process's share (0-based) of the shard files; with --world-size. "
                   "[default: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, else 0]")
@click.option("--world-size", type=click.IntRange(min=1), metavar="W",
              help="How many shares the shard files are split into (file i goes to share i mod W; mC4 splits "
                   "are dealt by size, largest first to the least loaded share). "
                   "[default: SLURM_ARRAY_TASK_COUNT, else 1]")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def run(config_name: str, step: str, rank: int | None, world_size: int | None, overrides: tuple[str, ...]) -> None:
    """Download, extract and preprocess a corpus into one dataset artifact (a recipe).

    Runs the recipe NAME_OR_PATH: each shard file is downloaded (resumed and
    retried; exit 75 when retries run out, so Slurm can requeue), extracted,
    and tokenized into DATA_DIR/NAME_NN_text_document.bin/.idx; finalize then
    writes the tokenizer copies, config.yaml and manifest.json of DATA_DIR.
    Every step leaves a completion marker per file under DATA_DIR/.bignlp-done,
    so running the same command again (after a failure, kill or requeue)
    redoes only what is missing. KEY=VALUE arguments override recipe keys
    (data_dir, the_pile_url, file_numbers, raw_dataset_files, ...).

    Example:

    \b
        bignlp-dataprep run --config gpt3/download_gpt3_pile data_dir=/data/pile \\
          the_pile_url=https://mirror.example/pile/train file_numbers=0-29 workers=8
        # as a Slurm array: one task per share, then one finalize job
        bignlp-dataprep run --config gpt3/download_gpt3_pile --step download,extract,preprocess \\
          --rank 3 --world-size 30 data_dir=/data/pile
        bignlp-dataprep run --config gpt3/download_gpt3_pile --step finalize data_dir=/data/pile
    """
    import os

    from .recipes import load_recipe
    from .runner import run_recipe
    from .shards import rank_from_env

    for item in overrides:
        if "=" not in item:
            raise click.UsageError(f"unexpected argument {item!r}: overrides are KEY=VALUE (e.g. data_dir=/data)")
    if (rank is None) != (world_size is None):
        raise click.UsageError("give --rank and --world-size together (or neither, to use SLURM_ARRAY_* or 0 of 1)")
    if rank is not None and world_size is not None and rank >= world_size:
        raise click.UsageError(f"--rank {rank} must be below --world-size {world_size}")
    from .tasks import is_task_config

    if is_task_config(config_name):  # squad/v1.1, xquad, glue/<task>: a task-data artifact
        from .tasks import load_task, run_task

        with exit_on_error(PROG):
            task = load_task(config_name, overrides)
            manifest = run_task(task, config_name=config_name, echo=lambda msg: click.echo(msg, err=True))
        counts = ", ".join(f"{split} {n.get('t5', n.get('prompt'))}" for split, n in manifest.summary["splits"].items())
        click.echo(f"artifact: {task.root} (task-data {task.task}: {counts})")
        return
    with exit_on_error(PROG):
        from .runner import parse_steps

        steps = parse_steps(step)
        if rank is None or world_size is None:
            rank, world_size = rank_from_env(os.environ)
        if world_size > 1 and step == "all":
            steps = tuple(s for s in steps if s != "finalize")
        cfg = load_recipe(config_name, overrides)
        report = run_recipe(cfg, steps=steps, rank=rank, world_size=world_size, config_name=config_name,
                            progress=True, echo=lambda msg: click.echo(msg, err=True))
    click.echo(f"share {rank} of {world_size}: {len(report.items)} file(s) {' '.join(report.items) or '-'}")
    for name in steps:
        if name in report.done or name in report.skipped:
            click.echo(f"  {name}: {len(report.done.get(name, []))} done, "
                       f"{len(report.skipped.get(name, []))} already done or not needed")
    if report.manifest is not None:
        s = report.manifest.summary
        click.echo(f"artifact: {cfg.root} ({len(s['datasets'])} datasets, {s['num_documents']:,} documents, "
                   f"{s['num_tokens']:,} tokens)")
        _echo_skipped(s)
    elif world_size > 1 and "finalize" not in steps:
        click.echo(f"when every share is done: bignlp-dataprep run --config {config_name} --step finalize ...")


@main.command(cls=GreedyCommand)
@click.option("--input", "inputs", multiple=True, required=True, metavar="DIR_OR_PREFIX [DIR_OR_PREFIX...]",
              help="Dataset artifacts to merge, in document order: an artifact directory (all its pairs, one per "
                   "JSON key) or one DIR/NAME_<key>_document prefix in it. Several after one flag or repeated flags.")
@click.option("--output-prefix", required=True, metavar="DIR/NAME",
              help="Writes DIR/NAME_<key>_document.bin/.idx per JSON key; DIR becomes a new dataset artifact "
                   "(tokenizer/ copied from the first input, config.yaml, manifest.json last).")
def merge(inputs: tuple[str, ...], output_prefix: str) -> None:
    """Merge several datasets (partitions) into one .bin/.idx pair per key (Megatron's tools/merge_datasets.py).

    The tokens are concatenated in --input order, the index rebuilt; the
    result equals preprocessing all the inputs' text in one run, byte for
    byte. Inputs must hold the same token dtype and come from the same
    tokenizer files; otherwise it stops with one line and writes nothing.

    Example:

    \b
        bignlp-dataprep preprocess --input part-0.jsonl --output-prefix parts/p0/pile ...
        bignlp-dataprep preprocess --input part-1.jsonl --output-prefix parts/p1/pile ...
        bignlp-dataprep merge --input parts/p0 parts/p1 --output-prefix data/pile
    """
    from .merge import MergeConfig, merge_datasets

    with exit_on_error(PROG):
        cfg = MergeConfig(input=inputs, output_prefix=output_prefix)
        manifest = merge_datasets(cfg, progress=True)
    s = manifest.summary
    click.echo(f"merged {len(s['merged_from'])} pair(s): {s['num_documents']:,} documents, {s['num_tokens']:,} tokens "
               f"in {s['elapsed_s']:.1f} s")
    _echo_artifact(manifest, Path(output_prefix).parent)


@main.command()
@click.argument("path", metavar="DIR_OR_PREFIX")
@click.option("--show", "num_show", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Also print the first N documents of each dataset, detokenized.")
@click.option("--max-chars", type=click.IntRange(min=1), default=300, show_default=True, metavar="N",
              help="Cut each shown document to N characters.")
@click.option("--histogram/--no-histogram", default=True, show_default=True,
              help="Print each dataset's histogram of tokens per document (power-of-two buckets) and its "
                   "min/median/mean/p99/max.")
@click.option("--histogram-png", metavar="PATH.png",
              help="Also plot the histograms of every dataset into a PNG (needs matplotlib: the 'plot' extra).")
def inspect(path: str, num_show: int, max_chars: int, histogram: bool, histogram_png: str | None) -> None:
    """Check a dataset artifact and print what it holds.

    DIR_OR_PREFIX is an artifact directory or one DIR/NAME_text_document
    prefix in it. Fails (exit 3) if the artifact is incomplete or its
    files do not match the manifest. Prints documents, sequences, tokens
    and a histogram of tokens per document for each dataset.

    Example:

    \b
        bignlp-dataprep inspect data/ --show 2 --histogram-png data-lengths.png
    """
    from .inspect_dataset import histogram_png as plot_histogram
    from .inspect_dataset import histogram_text, inspect_dataset

    with exit_on_error(PROG):
        info = inspect_dataset(path, num_show=num_show)
        png = plot_histogram(info["datasets"], histogram_png) if histogram_png else None
    tok = info["tokenizer"]
    click.echo(f"artifact: {info['artifact_dir']}")
    sentinels = f", {tok['num_sentinel_tokens']} sentinels" if tok.get("num_sentinel_tokens") else ""
    click.echo(f"tokenizer: {tok['type']} (vocab_size {tok['vocab_size']}, eod_id {tok['eod_id']}{sentinels})")
    for d in info["datasets"]:
        click.echo(f"{d['prefix']}: {d['num_documents']:,} documents, {d['num_sequences']:,} sequences, "
                   f"{d['num_tokens']:,} tokens, {d['dtype']}")
        if histogram:
            for line in histogram_text(d["doc_lengths"]):
                click.echo(line)
        for i, text in enumerate(d["shown"]):
            cut = text if len(text) <= max_chars else text[:max_chars] + "…"
            click.echo(f"  [{i}] {cut!r}")
    if png is not None:
        click.echo(f"histogram: {png}")
