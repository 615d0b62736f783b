"""``bignlp-evaluate``: a thin click skin over the library (the only module that imports click)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bignlp_contracts import ConfigError, exit_on_error, resolve_checkpoint

from . import __version__
from .config import load_evaluation_config, shipped_configs, torch_dtype_name

PROG = "bignlp-evaluate"


def _log(line: str) -> None:
    click.echo(line, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Evaluate BigNLP GPT checkpoints zero-shot on lm-evaluation-harness tasks, from local task files.

    The seed's tasks: lambada, boolq, race, piqa, hellaswag, winogrande, wikitext2, wikitext103
    (all_tasks); any other lm-eval task name passes through. Results are an evaluation artifact
    (results.json, results.md, results.csv, manifest.json).
    """


@main.command("harness")
@click.option("--config", "config_name", metavar="NAME_OR_PATH",
              help=f"evaluation config with the NeMo launcher's keys (evaluation.run.*, evaluation.model.*): "
                   f"shipped ({', '.join(shipped_configs())}) or a YAML path. Flags override it.")
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="DIR",
              help="a GPT model checkpoint, or a training run directory (its latest checkpoint) "
                   "[default: model.checkpoint_folder + model.checkpoint_name of --config].")
@click.option("--tasks", metavar="LIST", help="comma list of lambada, boolq, race, piqa, hellaswag, winogrande, "
                                              "wikitext2, wikitext103, or all_tasks, or lm-eval task names "
                                              "[default: run.tasks, all_tasks].")
@click.option("--data-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="the task files, one <task>.jsonl each (see `bignlp-evaluate download`) [default: run.data_dir].")
@click.option("--output", type=click.Path(path_type=Path), metavar="DIR",
              help="the evaluation artifact to write; must be new or empty [default: run.results_dir].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="requests per forward [default: model.eval_batch_size, 4].")
@click.option("--precision", type=click.Choice(["32", "bf16", "16"]), default=None,
              help="parameter precision [default: model.precision; 32 without --config].")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:N, auto, or a comma list (cuda:0,cuda:1) to split a model too large for "
                   "one device layer-wise over several [default: model.device, auto].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="only the first N documents of each task (a smoke test, not a score) [default: run.limit].")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="start this many local processes, each scoring a share of every task's documents (the "
                   "results equal one process's); leave at 1 under torchrun or srun, which start them.")
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
@click.pass_context
def harness_command(ctx, config_name, checkpoint, tasks, data_dir, output, batch_size, precision, device, limit,
                    nproc_per_node, overrides) -> None:
    """Run lm-evaluation-harness tasks on a GPT checkpoint and write an evaluation artifact.

    \b
    Examples:
      bignlp-evaluate harness --checkpoint results/gpt3_126m --tasks all_tasks --data-dir data/eval_harness \\
          --output results/gpt3_126m/eval_all
      bignlp-evaluate harness --config gpt3/evaluate_all run.model_train_name=gpt3_126m model.eval_batch_size=16
      bignlp-evaluate harness --nproc-per-node 2 --checkpoint results/gpt3_126m --tasks lambada \\
          --data-dir data/eval_harness --output results/gpt3_126m/eval_lambada
    """
    from bignlp_contracts import to_dict

    from .harness import evaluate_checkpoint

    with exit_on_error(PROG):
        cfg = load_evaluation_config(config_name, overrides)
        m, run = cfg.model, cfg.run
        if precision is not None:
            m.precision = precision
        elif config_name is None and not any(o.split("=")[0].endswith("precision") for o in overrides):
            m.precision = "32"  # bf16 is the launcher's default for GPUs; a bare command runs anywhere
        m.eval_batch_size = batch_size or m.eval_batch_size
        m.device = device or m.device
        run.tasks = tasks or run.tasks
        run.limit = limit or run.limit
        if checkpoint is None:
            if not m.checkpoint_folder:
                raise ConfigError("no checkpoint to evaluate",
                                  hint="give --checkpoint DIR (or --config with model.checkpoint_folder)")
            checkpoint = resolve_checkpoint(m.checkpoint_folder, m.checkpoint_name)
        run.data_dir = str(data_dir) if data_dir is not None else run.data_dir
        if not run.data_dir:
            raise ConfigError("no task data directory", hint="give --data-dir DIR (or run.data_dir=DIR)")
        run.results_dir = str(output) if output is not None else run.results_dir
        if not run.results_dir:
            raise ConfigError("no output directory", hint="give --output DIR (or run.results_dir=DIR)")
        if nproc_per_node > 1:
            from .harness import check_decoder_only, check_output

            check_output(run.results_dir)  # one error line here rather than one per process
            check_decoder_only(checkpoint)
            _relaunch(ctx, "harness", nproc_per_node, {
                "--config": config_name, "--checkpoint": checkpoint, "--tasks": tasks, "--data-dir": data_dir,
                "--output": output, "--batch-size": batch_size, "--precision": precision, "--device": device,
                "--limit": limit}, overrides)
        evaluate_checkpoint(checkpoint, tasks=run.tasks, data_dir=run.data_dir, output=run.results_dir,
                            batch_size=m.eval_batch_size, dtype=torch_dtype_name(m.precision),
                            device=_device(m.device), limit=run.limit, config=to_dict(cfg), log=_log)
        click.echo(str(Path(run.results_dir) / "results.md"))


def _relaunch(ctx: click.Context, command: str, nproc_per_node: int, given: dict, overrides=()) -> None:
    """Run ``command`` again in ``nproc_per_node`` local processes (the flags ``given``, those not None), and exit
    with their status."""
    from bignlp_contracts import discover_run_env
    from bignlp_contracts.launch import launch_local

    if discover_run_env().is_distributed:
        raise ConfigError("--nproc-per-node starts the processes itself", hint="under torchrun or srun leave it at 1")
    argv = [sys.executable, "-m", "bignlp_evaluate", command]
    argv += [str(x) for flag, value in given.items() if value is not None for x in (flag, value)]
    ctx.exit(launch_local([*argv, *overrides], nproc_per_node))


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@main.command("prompt")
@click.option("--prompt-checkpoint", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="a prompt-checkpoint (bignlp-train prompt-learn's RUN_DIR/prompt_checkpoint).")
@click.option("--data", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="JSONL test lines: taskname and the fields of the task's template, answer included.")
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="the evaluation artifact to write; must be new or empty.")
@click.option("--base", type=click.Path(path_type=Path), metavar="DIR", default=None,
              help="the frozen base model-checkpoint, when it is no longer where the prompt checkpoint recorded "
                   "it; it must be the very one the prompts pin (manifest sha256, tokenizer).")
@click.option("--disable-virtual-tokens", is_flag=True,
              help="evaluate the base on the same templates without the virtual tokens (what the prompts add).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="prompts generated together.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help="answer tokens to generate at most [default: the task's model.data.max_new_tokens at training].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
def prompt_command(prompt_checkpoint, data, output, base, disable_virtual_tokens, batch_size, max_new_tokens,
                   device) -> None:
    """Score a prompt-learned GPT, T5 or mT5 on test JSONL: greedy answers, SQuAD exact match and F1.

    \b
    Example:
      bignlp-evaluate prompt --prompt-checkpoint results/gpt3_126m/prompt_learning_squad/prompt_checkpoint \\
          --data data/squad/prompt/test.jsonl --output results/gpt3_126m/eval_prompt_squad
    """
    from .prompt import evaluate_prompts

    with exit_on_error(PROG):
        config = {"prompt_checkpoint": str(prompt_checkpoint), "data": str(data), "base": base and str(base),
                  "disable_virtual_tokens": disable_virtual_tokens, "batch_size": batch_size,
                  "max_new_tokens": max_new_tokens, "device": device}
        evaluate_prompts(prompt_checkpoint, data=data, output=output, base=base,
                         disable_virtual_tokens=disable_virtual_tokens, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, device=_device(device), config=config, log=_log)
        click.echo(str(Path(output) / "results.md"))


_SEQ2SEQ_HELP = {
    "squad": ("SQuAD exact match and F1 of a fine-tuned T5/mT5 (greedy answers; the official v1.1 scoring, or "
              "v2.0's with its answerable/unanswerable parts when there are unanswerable questions).",
              "a SQuAD-format JSON (.json or .json.gz) or a task-data directory (bignlp-dataprep run --config "
              "squad/v1.1|squad/v2.0): its dev questions, every gold answer."),
    "xquad": ("XQuAD exact match and F1 per language (and their average) of a fine-tuned mT5.",
              "a directory of xquad.<lang>.json files, one such file, or a task-data directory (--config xquad)."),
    "glue": ("Accuracy of a fine-tuned T5 on a GLUE task's text-to-text validation split.",
             "a task-data directory (--config glue/<task>: its validation split), or a source file with --targets."),
    "custom": ("Exact string match of a fine-tuned T5/mT5 on parallel source/target files.",
               "the source file (one example a line), with --targets; or a task-data directory."),
}


def _seq2seq_command(kind: str) -> None:
    summary, data_help = _SEQ2SEQ_HELP[kind]

    @main.command(kind, help=f"""{summary}

    Sources are framed as bignlp-train finetune frames them; the output is an evaluation
    artifact (results.json with every prediction, results.md, results.csv).

    \b
    Example:
      bignlp-evaluate {kind} --checkpoint results/t5_squad --data DATA --output results/t5_squad_eval
    """)
    @click.option("--checkpoint", required=True, type=click.Path(path_type=Path), metavar="DIR",
                  help="a fine-tuned T5/mT5 model-checkpoint, or its run directory (its latest checkpoint).")
    @click.option("--data", required=True, type=click.Path(path_type=Path), metavar="PATH", help=data_help)
    @click.option("--targets", type=click.Path(path_type=Path), metavar="FILE", default=None,
                  help="glue/custom with a source file: the target file (one answer a line).")
    @click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
                  help="the evaluation artifact to write; must be new or empty.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                  help="sources generated together.")
    @click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
                  help="answer tokens at most [default: the checkpoint's fine-tuning max_tgt_seq_length].")
    @click.option("--max-source-length", type=click.IntRange(min=3), default=None,
                  help="source tokens (<bos>/<eos> included; a longer source keeps its tail) [default: the "
                       "checkpoint's fine-tuning max_src_seq_length].")
    @click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
    @click.option("--unanswerable-text", metavar="TEXT", default=None,
                  help="squad/xquad: the output that means 'no answer' to a SQuAD v2.0 unanswerable question "
                       "[default: the task data's unanswerable_text, else 'unanswerable'].")
    @click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
                  help="start this many local processes, each generating a share of the examples (the results "
                       "equal one process's); leave at 1 under torchrun or srun, which start them.")
    @click.pass_context
    def command(ctx, checkpoint, data, targets, output, batch_size, max_new_tokens, max_source_length, device,
                unanswerable_text, nproc_per_node) -> None:
        from .seq2seq import evaluate_seq2seq

        with exit_on_error(PROG):
            if nproc_per_node > 1:
                from .harness import check_output
                from .seq2seq import check_seq2seq, load_examples

                check_output(output)  # one error line here rather than one per process
                check_seq2seq(Path(checkpoint))
                load_examples(kind, Path(data), None if targets is None else Path(targets))
                _relaunch(ctx, kind, nproc_per_node, {
                    "--checkpoint": checkpoint, "--data": data, "--targets": targets, "--output": output,
                    "--batch-size": batch_size, "--max-new-tokens": max_new_tokens,
                    "--max-source-length": max_source_length, "--device": device,
                    "--unanswerable-text": unanswerable_text})
            config = {"task": kind, "checkpoint": str(checkpoint), "data": str(data),
                      "targets": targets and str(targets), "batch_size": batch_size,
                      "max_new_tokens": max_new_tokens, "max_source_length": max_source_length, "device": device,
                      "unanswerable_text": unanswerable_text}
            out = evaluate_seq2seq(kind, checkpoint, data=data, targets=targets, output=output,
                                   batch_size=batch_size, max_new_tokens=max_new_tokens,
                                   max_source_length=max_source_length, device=_device(device), config=config,
                                   unanswerable=unanswerable_text, log=_log)
            if out is not None:  # rank 0 (the others only generated)
                click.echo((Path(out) / "results.md").read_text(), nl=False)


for _kind in _SEQ2SEQ_HELP:
    _seq2seq_command(_kind)


@main.command("download")
@click.option("--tasks", required=True, metavar="LIST", help="comma list of task names, or all_tasks.")
@click.option("--data-dir", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="where the <task>.jsonl files go.")
@click.option("--url-base", metavar="URL", help="fetch URL/<task>.jsonl for every task not in --urls-config.")
@click.option("--urls-config", type=click.Path(path_type=Path, exists=True, dir_okay=False), metavar="FILE",
              help="YAML: task → URL, or task → {url: URL, sha256: HEX} (checked after the download).")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="attempts after the first for a failing download (resumed where it stopped).")
def download_command(tasks, data_dir, url_base, urls_config, retries) -> None:
    """Fetch task files into DIR, resumably, checking sha256 where given and each file's rows.

    \b
    Examples:
      bignlp-evaluate download --tasks all_tasks --data-dir data/eval_harness --url-base https://mirror.example/eval
      bignlp-evaluate download --tasks lambada,piqa --data-dir data/eval_harness --urls-config urls.yaml
    """
    from .download import download_tasks, load_urls_config, task_sources
    from .tasks import STANDARD_TASKS, parse_task_names, resolve_tasks

    with exit_on_error(PROG):
        names = parse_task_names(tasks)
        specs = resolve_tasks(names, known_lm_eval_tasks=[] if set(names) <= set(STANDARD_TASKS) else None)
        urls = load_urls_config(urls_config) if urls_config else None
        sources = task_sources(specs, url_base=url_base, urls=urls)
        for path in download_tasks(sources, data_dir, retries=retries, log=_log):
            click.echo(str(path))
