"""``bignlp-hptool``: the command-line skin (the only module importing click)."""

from __future__ import annotations

import click

from bignlp_contracts import exit_on_error

from . import __version__

PROG = "bignlp-hptool"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """The HP tool's training side for bignlp-train: size, time to train, base config, training HP search.

    Example:

      bignlp-hptool run --config gpt3/5b train_settings.data_prefix=[1.0,data/pile_text_document]
    """


@main.command()
@click.option("--config", "config_name", default="gpt3/5b", show_default=True,
              help="Shipped search config (gpt3/5b, t5/3b, mt5/unknown_size, ...) or a YAML path.")
@click.option("--dry-run", is_flag=True, help="Predict and rank every candidate, write the configs; launch nothing.")
@click.argument("overrides", nargs=-1)
def run(config_name: str, dry_run: bool, overrides: tuple[str, ...]) -> None:
    """Recommend a size if none is given, write the base config, run the training HP search.

    Candidates are filtered by the memory model before any launch, ranked by predicted
    throughput, and the best `limit_search_runs` run as short bignlp-train jobs on this machine.

    Example:

      bignlp-hptool run --config gpt3/tiny-cpu train_settings.logs=results/hp \\
          train_settings.data_prefix=[1.0,data/demo-en_text_document]
    """
    from .config import load_hp_config
    from .tool import run_hp_tool

    with exit_on_error(PROG):
        run_hp_tool(load_hp_config(config_name, overrides), dry_run=dry_run, log=click.echo)


@main.command()
@click.option("--config", "config_name", default="gpt3/unknown_size", show_default=True,
              help="Shipped search config or a YAML path.")
@click.argument("overrides", nargs=-1)
def recommend(config_name: str, overrides: tuple[str, ...]) -> None:
    """Print the recommended model size (when model_size_in_b is null) and the time to train.

    Example:

      bignlp-hptool recommend --config gpt3/unknown_size train_settings.num_nodes=20
    """
    from .config import load_hp_config
    from .tool import recommend as recommend_size

    with exit_on_error(PROG):
        cfg = load_hp_config(config_name, overrides)
        for line in recommend_size(cfg).lines(cfg.model_type):
            click.echo(line)


@main.command()
def validate() -> None:
    """Fit the model's constants on the published GPT-3 rows, print the error on every published row.

    Example:

      bignlp-hptool validate
    """
    from .fidelity import calibrate, fidelity_table, load_rows, predict_rows

    with exit_on_error(PROG):
        rows = load_rows()
        constants = calibrate(rows)
        click.echo(f"constants fitted on the GPT-3 rows: {constants}")
        click.echo(fidelity_table(predict_rows(rows, constants)))
