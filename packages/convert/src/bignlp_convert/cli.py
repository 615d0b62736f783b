"""``bignlp-convert``: a thin click skin over the library (the only module that imports click)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bignlp_contracts import ConfigError, exit_on_error, resolve_checkpoint

from . import __version__
from .config import load_conversion_config, shipped_configs

PROG = "bignlp-convert"
DTYPES = ("float32", "bfloat16", "float16")


def _log(line: str) -> None:
    click.echo(line, err=True)


_verify_option = click.option(
    "--verify", type=click.Choice(["sha256", "size"]), default="sha256", show_default=True,
    help="sha256: check every source file read against its manifest's hash first (a damaged checkpoint is "
         "refused); size: sizes only (storage you trust).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Convert model checkpoints to and from NeMo 1.x .nemo archives and Hugging Face models.

    GPT, T5 and mT5; any tensor/pipeline layout in and out; on a CPU, a layer at a time. Every
    output is an artifact directory with a manifest naming its source; an output path that already
    holds something is refused.
    """


@main.command("to-nemo")
@click.option("--config", "config_name", metavar="NAME_OR_PATH",
              help=f"conversion config with the NeMo launcher's keys (conversion.model.*, conversion.run.*): "
                   f"shipped ({', '.join(shipped_configs())}) or a YAML path. Flags override it.")
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="DIR",
              help="a model checkpoint, or a training run directory (its latest checkpoint) "
                   "[default: model.checkpoint_folder + model.checkpoint_name of --config].")
@click.option("--output", type=click.Path(path_type=Path), metavar="DIR/NAME.nemo",
              help="the .nemo file to write; its directory becomes the artifact (manifest.json beside it) and "
                   "must be new or empty [default: run.results_dir/run.nemo_file_name of --config].")
@click.option("--tensor-model-parallel-size", "-t", type=click.IntRange(min=1), default=None,
              help="tensor-parallel ranks of the archive (mp_rank_XX/ directories), whatever the training layout "
                   "was [default: model.tensor_model_parallel_size, else 1].")
@click.option("--pipeline-model-parallel-size", "-p", type=click.IntRange(min=1), default=None,
              help="pipeline stages of the archive (tp_rank_XX_pp_rank_XXX/ directories) "
                   "[default: model.pipeline_model_parallel_size, else 1].")
@click.option("--pipeline-model-parallel-split-rank", type=click.IntRange(min=0), default=None,
              help="T5: the first pipeline stage holding decoder layers [default: half of the stages].")
@_verify_option
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
def to_nemo_command(config_name, checkpoint, output, tensor_model_parallel_size, pipeline_model_parallel_size,
                    pipeline_model_parallel_split_rank, verify, overrides) -> None:
    """Write a checkpoint as a NeMo 1.x .nemo archive (model_config.yaml, Megatron key names and splits).

    \b
    Examples:
      bignlp-convert to-nemo --checkpoint results/gpt3_126m --output results/gpt3_126m/convert_nemo/megatron_gpt.nemo
      bignlp-convert to-nemo --config gpt3/convert_gpt3 run.model_train_name=gpt3_5b -t 2
    """
    from .nemo import to_nemo

    with exit_on_error(PROG):
        cfg = load_conversion_config(config_name, overrides)
        m, run = cfg.model, cfg.run
        if checkpoint is None:
            if not m.checkpoint_folder:
                raise ConfigError("no checkpoint to convert", hint="give --checkpoint DIR (or --config with "
                                                                   "model.checkpoint_folder)")
            checkpoint = resolve_checkpoint(m.checkpoint_folder, m.checkpoint_name)
        if output is None:
            results = run.results_dir or run.output_path
            if not results:
                raise ConfigError("no output path", hint="give --output DIR/NAME.nemo (or --config with "
                                                         "run.results_dir)")
            output = Path(results) / run.nemo_file_name
        if output.suffix != ".nemo":
            raise ConfigError(f"--output {output}: must name a .nemo file", hint="e.g. --output DIR/megatron_gpt.nemo")
        to_nemo(checkpoint, output,
                tensor_model_parallel_size=tensor_model_parallel_size or m.tensor_model_parallel_size,
                pipeline_model_parallel_size=pipeline_model_parallel_size or m.pipeline_model_parallel_size,
                pipeline_model_parallel_split_rank=(pipeline_model_parallel_split_rank
                                                    if pipeline_model_parallel_split_rank is not None
                                                    else m.pipeline_model_parallel_split_rank),
                expected_family=m.model_type, verify=verify, log=_log)
        click.echo(str(output))


@main.command("from-nemo")
@click.option("--nemo", "nemo_file", required=True, type=click.Path(path_type=Path), metavar="FILE.nemo",
              help="a NeMo 1.x GPT or T5/mT5 archive: any TP/PP layout, uncompressed or gzip (before NeMo 1.7).")
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="the model checkpoint directory to write (new or empty).")
def from_nemo_command(nemo_file, output) -> None:
    """Import a .nemo archive as a model checkpoint that load_model, evaluation and serving read."""
    from .nemo import from_nemo

    with exit_on_error(PROG):
        from_nemo(nemo_file, output, log=_log)
        click.echo(str(output))


@main.command("to-hf")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="a model checkpoint, or a training run directory (its latest checkpoint).")
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="the Hugging Face model directory to write (new or empty).")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="dtype of the saved weights [default: as the checkpoint stores them].")
@click.option("--max-shard-size", default="5GB", show_default=True, metavar="SIZE",
              help="largest safetensors file; above it the weights are sharded with model.safetensors.index.json "
                   "(bytes, or KB/MB/GB).")
@_verify_option
def to_hf_command(checkpoint, output, dtype, max_shard_size, verify) -> None:
    """Export a checkpoint as a Hugging Face model: GPT → GPT2LMHeadModel, T5 → T5ForConditionalGeneration,
    mT5 → MT5ForConditionalGeneration (safetensors, config.json, tokenizer files).

    An architecture Hugging Face has no class for (a T5 with learned absolute positions, the NeMo
    launcher's default) is refused with one line naming the option.
    """
    from .hf import parse_size, to_hf

    with exit_on_error(PROG):
        to_hf(checkpoint, output, dtype=dtype, max_shard_size=parse_size(max_shard_size), verify=verify, log=_log)
        click.echo(str(output))


@main.command("from-hf")
@click.option("--hf", "hf_dir", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="a Hugging Face model directory (GPT2LMHeadModel, T5ForConditionalGeneration, "
                   "MT5ForConditionalGeneration) with its tokenizer files.")
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="the model checkpoint directory to write (new or empty).")
def from_hf_command(hf_dir, output) -> None:
    """Import a Hugging Face model as a model checkpoint (the vocabulary padded as training pads it)."""
    from .hf import from_hf

    with exit_on_error(PROG):
        from_hf(hf_dir, output, log=_log)
        click.echo(str(output))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
