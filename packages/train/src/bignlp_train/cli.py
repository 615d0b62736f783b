"""``bignlp-train``: a thin click skin over the library (the only module that imports click)."""

from __future__ import annotations

import click
import yaml

from bignlp_contracts import exit_on_error, to_dict

from . import __version__
from .config import load_train_config, shipped_configs

PROG = "bignlp-train"


def _config_option(required: bool):
    return click.option(
        "--config", "config_name", required=required, metavar="NAME_OR_PATH",
        help=f"shipped config ({', '.join(shipped_configs())}) or a path to a YAML file.",
    )


_overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Pretrain GPT-3-style models on Megatron datasets made by bignlp-dataprep.

    Configs use the NeMo-Megatron key names (trainer.*, exp_manager.*, model.*);
    override any key with trailing key.sub=value arguments.
    """


@main.command()
@_config_option(required=True)
@_overrides_argument
def pretrain(config_name: str, overrides: tuple[str, ...]) -> None:
    """Train a GPT from scratch, or resume the run's latest checkpoint.

    Writes RUN_DIR/config.yaml, RUN_DIR/metrics.jsonl and gpt-checkpoint
    artifacts under RUN_DIR/checkpoints/ (RUN_DIR = exp_manager.explicit_log_dir,
    else exp_manager.exp_dir/exp_manager.name).

    Example:

    \b
      bignlp-train pretrain --config gpt3/tiny-cpu \\
        model.data.data_prefix=[1.0,data/demo-en_text_document] \\
        exp_manager.explicit_log_dir=results/tiny trainer.max_steps=50
    """
    with exit_on_error(PROG):
        cfg = load_train_config(config_name, overrides)
        from .trainer import pretrain as run_pretrain  # torch + megatron-core: only when training

        result = run_pretrain(cfg, log=lambda line: click.echo(line))
    before = "n/a (resumed)" if result.initial_val_loss is None else f"{result.initial_val_loss:.4f}"
    after = "n/a" if result.final_val_loss is None else f"{result.final_val_loss:.4f}"
    click.echo(f"validation loss before training: {before}")
    click.echo(f"validation loss after training:  {after} (step {result.step}/{result.max_steps})")
    if result.test_loss is not None:
        click.echo(f"test loss: {result.test_loss:.4f}")
    click.echo(f"run dir: {result.run_dir}")
    latest = result.latest_checkpoint or "none (exp_manager.create_checkpoint_callback=false)"
    click.echo(f"latest checkpoint: {latest}")


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
