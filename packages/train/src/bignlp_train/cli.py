"""``bignlp-train``: a thin click skin over the library (the only module that imports click)."""

from __future__ import annotations

import sys

import click
import yaml

from bignlp_contracts import RetryableError, discover_run_env, exit_on_error, to_dict

from . import __version__
from .config import load_train_config, shipped_configs

PROG = "bignlp-train"


def _config_option(required: bool):
    return click.option(
        "--config", "config_name", required=required, metavar="NAME_OR_PATH",
        help=f"shipped config ({', '.join(shipped_configs())}) or a path to a YAML file.",
    )


_overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")


def _refuse_nproc_under_a_launcher(nproc_per_node: int) -> None:
    if nproc_per_node > 1 and discover_run_env().is_distributed:
        raise click.UsageError("--nproc-per-node starts workers itself; under torchrun or srun leave it at 1")


def _launch_workers(ctx: click.Context, command: str, config_name: str, overrides: tuple[str, ...],
                    nproc_per_node: int, run_dir) -> None:
    """Run ``command`` again in ``nproc_per_node`` local workers and exit with their status; a busy run
    directory (another run holds its lock) starts none."""
    from bignlp_contracts import probe_run_lock

    from .launch import launch_local
    from .rundir import BUSY_HINT

    probe_run_lock(run_dir, hint=BUSY_HINT)
    argv = [sys.executable, "-m", "bignlp_train", command, "--config", config_name, *overrides]
    ctx.exit(launch_local(argv, nproc_per_node))


def _exit_if_stopped(ctx: click.Context, result, why: str | None = None) -> None:
    """A run stopped by its time limit or a signal exits "retryable" (75) so the sbatch template requeues it;
    rank 0 says so. Every rank knows the stop (rank 0 decides for all), so srun sees one code, not 0 and 75."""
    if not result.stopped_early:
        return
    if result.rank == 0:
        by = f" by {why}" if why else ""
        click.echo(f"{PROG}: stopped{by} at step {result.step}/{result.max_steps}; exiting with "
                   f"{RetryableError.exit_code} (retryable): run the same command to continue", err=True)
    ctx.exit(RetryableError.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Pretrain GPT-3-style models on Megatron datasets made by bignlp-dataprep.

    Configs use the NeMo-Megatron key names (trainer.*, exp_manager.*, model.*);
    override any key with trailing key.sub=value arguments.
    """


@main.command()
@_config_option(required=True)
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="start this many local worker processes (world size = TP × PP × DP); leave at 1 under "
              "torchrun or srun, which start the workers themselves.")
@_overrides_argument
@click.pass_context
def pretrain(ctx: click.Context, config_name: str, nproc_per_node: int, overrides: tuple[str, ...]) -> None:
    """Train a GPT from scratch, or resume the run's latest checkpoint.

    Writes RUN_DIR/config.yaml, RUN_DIR/metrics.jsonl and model-checkpoint
    artifacts under RUN_DIR/checkpoints/ (RUN_DIR = exp_manager.explicit_log_dir,
    else exp_manager.exp_dir/exp_manager.name). Under torchrun or srun each
    process joins the job from its environment. One run at a time per run
    directory: a second one exits 2 naming the first (RUN_DIR/run.lock).

    Example:

    \b
      bignlp-train pretrain --config gpt3/tiny-cpu --nproc-per-node 2 \\
        model.data.data_prefix=[1.0,data/demo-en_text_document] \\
        exp_manager.explicit_log_dir=results/tiny trainer.max_steps=50
    """
    _refuse_nproc_under_a_launcher(nproc_per_node)
    with exit_on_error(PROG):
        cfg = load_train_config(config_name, overrides)
        from .trainer import plan_run
        from .trainer import pretrain as run_pretrain  # torch + megatron-core: only when training

        if nproc_per_node > 1:
            plan_run(cfg, nproc_per_node)  # one error line here rather than one per worker
            _launch_workers(ctx, "pretrain", config_name, overrides, nproc_per_node, cfg.exp_manager.run_dir())
        result = run_pretrain(cfg, log=lambda line: click.echo(line))
    if result.rank != 0:
        _exit_if_stopped(ctx, result)
        return
    before = "n/a (resumed)" if result.initial_val_loss is None else f"{result.initial_val_loss:.4f}"
    after = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    click.echo(f"validation loss before training: {before}")
    click.echo(f"validation loss after training:  {after} (step {result.step}/{result.max_steps})")
    if result.test_loss is not None:
        click.echo(f"test loss: {result.test_loss:.4f}")
    click.echo(f"run dir: {result.run_dir}")
    latest = result.latest_checkpoint or "none (exp_manager.create_checkpoint_callback=false)"
    click.echo(f"latest checkpoint: {latest}")
    _exit_if_stopped(ctx, result, result.stopped_by_signal or "trainer.max_time")


@main.command()
@click.option("--config", "config_name", required=True, metavar="NAME_OR_PATH",
              help="shipped fine-tuning config (t5/squad, t5/glue_mnli, t5/custom_task, mt5/xquad, mt5/custom_task; "
              "resolved in configs/fine_tuning) or a path to a YAML file.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="start this many local worker processes (world size = TP × DP); leave at 1 under torchrun or srun.")
@_overrides_argument
@click.pass_context
def finetune(ctx: click.Context, config_name: str, nproc_per_node: int, overrides: tuple[str, ...]) -> None:
    """Fine-tune a T5/mT5 checkpoint on source/target text files (SQuAD, XQuAD, GLUE, custom tasks).

    Starts from model.restore_from_path (a model-checkpoint or a run directory), trains every
    weight with the same loop, parallelism and checkpoints as pretraining, validates by greedy
    generation scored with model.data.validation_ds.metric.name, and keeps the best checkpoints
    by it under RUN_DIR/checkpoints/ (each records its base). Run again to resume.

    Example:

    \b
      bignlp-train finetune --config t5/squad data_dir=results/squad \\
        model.restore_from_path=results/t5_tiny exp_manager.explicit_log_dir=results/t5_squad
    """
    _refuse_nproc_under_a_launcher(nproc_per_node)
    with exit_on_error(PROG):
        from .config.finetune import load_finetune_config
        from .finetune import finetune as run_finetune
        from .finetune import plan_finetune

        cfg = load_finetune_config(config_name, overrides)
        if nproc_per_node > 1:
            plan = plan_finetune(cfg, nproc_per_node)  # one error line here rather than one per worker
            _launch_workers(ctx, "finetune", config_name, overrides, nproc_per_node, plan.run_dir)
        result = run_finetune(cfg, log=lambda line: click.echo(line))
    if result.rank != 0:
        _exit_if_stopped(ctx, result)
        return
    metric = result.metric
    before = result.initial_metrics.get(metric)
    after = result.final_metrics.get(metric)
    click.echo(f"{metric} before training: {'n/a (resumed)' if before is None else f'{before:.4f}'}")
    click.echo(f"{metric} after training:  {'n/a' if after is None else f'{after:.4f}'} "
               f"(step {result.step}/{result.max_steps})")
    click.echo(f"run dir: {result.run_dir}")
    best = "none" if result.best_checkpoint is None else f"{result.best_checkpoint} ({metric} {result.best_score:.4f})"
    click.echo(f"best checkpoint: {best}")
    click.echo(f"latest checkpoint: {result.latest_checkpoint or 'none'}")
    _exit_if_stopped(ctx, result, result.stopped_by_signal or "trainer.max_time")


@main.command("prompt-learn")
@click.option("--config", "config_name", required=True, metavar="NAME_OR_PATH",
              help="shipped prompt-learning config (gpt3/squad, t5/squad, mt5/squad; configs/prompt_learning) or a "
              "path to a YAML file.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="start this many local worker processes (world size = TP × PP × DP; TP/PP for a GPT base only); "
              "leave at 1 under torchrun or srun.")
@_overrides_argument
@click.pass_context
def prompt_learn(ctx: click.Context, config_name: str, nproc_per_node: int, overrides: tuple[str, ...]) -> None:
    """Learn virtual prompts (p-tuning or prompt tuning) for new tasks on a frozen GPT, T5 or mT5.

    The base (model.language_model_path, a model-checkpoint or run directory) never changes; only the
    prompts of model.new_tasks train. With model.restore_path (an earlier prompt checkpoint learned on the
    same base) its tasks are kept bit for bit. Writes RUN_DIR/prompt_checkpoint (a prompt-checkpoint
    artifact), resume points under RUN_DIR/checkpoints/ and RUN_DIR/metrics.jsonl; the same command resumes.
    Several processes split each global batch (data parallelism); a GPT base can also be split with
    model.tensor_model_parallel_size / model.pipeline_model_parallel_size, as in pretraining.

    Example:

    \b
      bignlp-train prompt-learn --config gpt3/squad \\
        model.language_model_path=results/gpt3_126m \\
        model.data.train_ds=[data/squad/prompt/train.jsonl] \\
        model.data.validation_ds=[data/squad/prompt/validation.jsonl] \\
        exp_manager.explicit_log_dir=results/gpt3_126m/prompt_learning_squad
    """
    _refuse_nproc_under_a_launcher(nproc_per_node)
    with exit_on_error(PROG):
        from .config.prompt import load_prompt_config
        from .prompt_learning import plan_prompt_learn
        from .prompt_learning import prompt_learn as run_prompt_learn

        cfg = load_prompt_config(config_name, overrides)
        if nproc_per_node > 1:
            plan = plan_prompt_learn(cfg, nproc_per_node)  # one error line here rather than one per worker
            _launch_workers(ctx, "prompt-learn", config_name, overrides, nproc_per_node, plan.run_dir)
        result = run_prompt_learn(cfg, log=lambda line: click.echo(line))
    if result.rank != 0:
        _exit_if_stopped(ctx, result)
        return
    after = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    click.echo(f"validation loss after training: {after} (step {result.step}/{result.max_steps})")
    click.echo(f"run dir: {result.run_dir}")
    _exit_if_stopped(ctx, result)
    click.echo(f"prompt checkpoint: {result.output}")


@main.command("show-config")
@_config_option(required=False)
@_overrides_argument
def show_config(config_name: str | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults, file and overrides applied) as YAML.

    Example:

    \b
      bignlp-train show-config --config gpt3/tiny-cpu trainer.max_steps=50
    """
    with exit_on_error(PROG):
        cfg = load_train_config(config_name, overrides)
    click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False), nl=False)
