"""``bignlp-export``: a thin click skin over the library (the only module that imports click)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from bignlp_contracts import ConfigError, InputError, exit_on_error, resolve_checkpoint, to_dict

from . import __version__
from .config import DTYPES, load_export_config, shipped_configs

PROG = "bignlp-export"


def _log(line: str) -> None:
    click.echo(line, err=True)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated integers, e.g. 1,2,4,8") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: every value must be at least 1")
    return values


_url_option = click.option("--url", default="127.0.0.1:8000", show_default=True, metavar="HOST:PORT",
                           help="the server's HTTP endpoint (what `bignlp-export serve` prints).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Serve GPT, T5 and mT5 checkpoints with Triton Inference Server.

    `triton` writes a model repository (tokenizer → model → detokenizer ensemble, and a streaming twin);
    `serve` runs tritonserver on it; `accuracy` checks lambada through the server; `bench` measures latency.
    """


@main.command("triton")
@click.option("--config", "config_name", metavar="NAME_OR_PATH",
              help=f"export config with the NeMo launcher's keys (export.model.*, export.triton_deployment.*): "
                   f"shipped ({', '.join(shipped_configs())}) or a YAML path. Flags override it.")
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="DIR",
              help="a model checkpoint, or a training run directory (its latest checkpoint) "
                   "[default: model.checkpoint_path of --config].")
@click.option("--output", type=click.Path(path_type=Path), metavar="DIR",
              help="the repository to write, new or empty [default: triton_deployment.triton_model_dir].")
@click.option("--model-name", metavar="NAME", help="name of the model in the repository [default: its family].")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None,
              help="largest batch Triton forms (dynamic batching) [default: triton_deployment.max_batch_size, 8].")
@click.option("--data-type", type=click.Choice(DTYPES), default=None,
              help="dtype the model runs in [default: triton_deployment.data_type, fp32].")
@click.option("--weight-data-type", type=click.Choice(DTYPES), default=None,
              help="dtype the repository stores the weights in [default: model.weight_data_type, else as the "
                   "checkpoint].")
@click.option("--instances", type=click.IntRange(min=1), default=None,
              help="model instances, each with its own copy of the weights [default: triton_deployment.instances, 1].")
@click.option("--instance-kind", type=click.Choice(["auto", "cpu", "gpu"]), default=None,
              help="auto: an instance takes a GPU when torch sees one, else runs on the CPU "
                   "[default: triton_deployment.instance_kind, auto].")
@click.option("--pipeline-parallel", type=click.IntRange(min=1), default=None,
              help="devices each instance spreads the model's layers over, in order (a model larger than one "
                   "device; on the CPU all on the CPU) [default: triton_deployment.pipeline_model_parallel_size, 1].")
@click.option("--tensor-parallel", type=click.IntRange(min=1), default=None,
              help="devices each instance splits every matrix over, one process each (Megatron's tensor "
                   "parallelism; must divide the attention heads; not with --pipeline-parallel above 1) "
                   "[default: model.tensor_model_parallel_size, 1].")
@click.argument("overrides", nargs=-1, metavar="[KEY.SUB=VALUE]...")
def triton_command(config_name, checkpoint, output, model_name, max_batch_size, data_type, weight_data_type,
                   instances, instance_kind, pipeline_parallel, tensor_parallel, overrides) -> None:
    """Write a Triton model repository for a checkpoint (GPT, T5 or mT5).

    Models: preprocessing (text → ids), NAME (generation with a KV cache, Python backend), NAME_stream
    (the same, one response per step: Triton's decoupled mode over gRPC), postprocessing (ids → text),
    ensemble and ensemble_stream chaining them. The weights are written into the repository, which
    gets a manifest (kind triton-repository) naming the source checkpoint.

    \b
    Examples:
      bignlp-export triton --checkpoint results/gpt3_126m --output results/gpt3_126m/model_repo
      bignlp-export triton --config gpt3/export_gpt3 run.model_train_name=gpt3_126m --max-batch-size 16
      bignlp-export triton --checkpoint results/gpt3_5b --output results/gpt3_5b/model_repo --tensor-parallel 2
    """
    from .repository import export_repository

    with exit_on_error(PROG):
        cfg = load_export_config(config_name, overrides)
        t = cfg.triton_deployment
        tensor_parallel = tensor_parallel or cfg.model.tensor_model_parallel_size
        pipeline_parallel = pipeline_parallel or t.pipeline_model_parallel_size
        if checkpoint is None:
            if not cfg.model.checkpoint_path:
                raise ConfigError("no checkpoint to export", hint="give --checkpoint DIR (or --config with "
                                                                  "model.checkpoint_path)")
            checkpoint = resolve_checkpoint(cfg.model.checkpoint_path, "latest")
        if output is None:
            if not t.triton_model_dir:
                raise ConfigError("no output directory", hint="give --output DIR (or --config with "
                                                              "triton_deployment.triton_model_dir)")
            output = Path(t.triton_model_dir)
        manifest = export_repository(
            checkpoint, output, model_name=model_name or t.model_name,
            max_batch_size=max_batch_size or t.max_batch_size,
            data_type=data_type or t.data_type, weight_data_type=weight_data_type or cfg.model.weight_data_type,
            instances=instances or t.instances, instance_kind=instance_kind or t.instance_kind,
            pipeline_parallel=pipeline_parallel, tensor_parallel=tensor_parallel,
            max_queue_delay_us=t.max_queue_delay_microseconds, num_threads=t.num_threads, config=to_dict(cfg),
            expected_family=cfg.run.model_type, log=_log)
        click.echo(f"{output}  ({manifest.summary['family']}: models {', '.join(manifest.summary['models'])})")


@main.command("serve")
@click.option("--repository", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="a repository written by `bignlp-export triton` (checked before the server starts).")
@click.option("--tritonserver", type=click.Path(path_type=Path), metavar="PATH",
              help="the tritonserver binary to run (its ../backends holds the python backend) [default: the "
                   "nvidia-pytriton one in the Triton venv].")
@click.option("--triton-env", type=click.Path(path_type=Path), metavar="DIR",
              help="the venv the models' Python code runs in (torch, numpy<2, our libraries) [default: "
                   "$BIGNLP_TRITON_ENV, ./.venv-triton, or the source tree's .venv-triton; `make triton-env`].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address every endpoint binds (0.0.0.0 to serve other machines).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True,
              help="gRPC endpoint (streaming: ensemble_stream).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True,
              help="Prometheus metrics endpoint (/metrics).")
@click.option("--log-file", type=click.Path(path_type=Path), metavar="FILE",
              help="the server's log [default: $TMPDIR/tritonserver-PID-PORT.log].")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=300, show_default=True, metavar="SECONDS",
              help="how long to wait for every model to load.")
@click.option("--exit-timeout", type=click.IntRange(min=0), default=5, show_default=True, metavar="SECONDS",
              help="on stop, how long the server waits for in-flight requests and open connections.")
def serve_command(repository, tritonserver, triton_env, host, http_port, grpc_port, metrics_port, log_file,
                  ready_timeout, exit_timeout) -> None:
    """Run tritonserver on a repository until SIGTERM or SIGINT (Ctrl-C), then stop it cleanly.

    Prints the endpoints once every model is ready. A repository with missing or truncated files (its
    weights deleted), or whose checkpoint is of an unknown family, is refused before the server starts.

    \b
    Example:
      bignlp-export serve --repository results/gpt3_126m/model_repo --http-port 8000
    """
    from .repository import check_repository
    from .server import Ports, TritonServer, find_triton

    with exit_on_error(PROG):
        manifest = check_repository(repository)
        install = find_triton(tritonserver, triton_env)
        server = TritonServer(install, repository, host=host, ports=Ports(http_port, grpc_port, metrics_port),
                              log_file=log_file, exit_timeout_s=exit_timeout)
        stopping: list[int] = []

        def on_signal(signum, _frame):
            stopping.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        server.start()
        try:
            _log(f"tritonserver {install.binary} (pid {server.process.pid}), log {server.log_file}")
            took = server.wait_ready(ready_timeout)
            name = manifest.summary["model_name"]
            click.echo(f"ready in {took:.1f} s: {manifest.summary['family']} model {name!r}", err=True)
            click.echo(f"http     {server.http_url}   (POST /v2/models/ensemble/infer)")
            click.echo(f"grpc     {server.grpc_url}   (streaming: ensemble_stream)")
            click.echo(f"metrics  {server.metrics_url}")
            sys.stdout.flush()
            while not stopping and server.process.poll() is None:
                time.sleep(0.2)
            if not stopping:
                raise InputError(f"tritonserver exited by itself with status {server.process.returncode}: "
                                 f"{server.last_error()} (log: {server.log_file})")
            _log(f"signal {signal.Signals(stopping[0]).name}: stopping tritonserver")
        finally:
            status = server.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
        _log(f"tritonserver stopped (status {status})")


@main.command("accuracy")
@_url_option
@click.option("--data", required=True, type=click.Path(path_type=Path), metavar="FILE.jsonl",
              help="lambada passages, one {\"text\": ...} a line (the format bignlp-evaluate reads).")
@click.option("--output", type=click.Path(path_type=Path), metavar="FILE.json",
              help="write the accuracy and each passage's answer here as JSON.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="passages per request.")
@click.option("--model", default="ensemble", show_default=True, help="the ensemble to ask.")
def accuracy_command(url, data, output, batch_size, model) -> None:
    """Lambada last-word accuracy through the served ensemble (greedy), scored as lm-eval's lambada_openai acc.

    \b
    Example:
      bignlp-export accuracy --url 127.0.0.1:8000 --data data/eval_harness/lambada.jsonl
    """
    from bignlp_contracts import atomic_write_text

    from .accuracy import lambada_accuracy
    from .client import server_errors

    with exit_on_error(PROG), server_errors(url):
        result = lambada_accuracy(url, data, model=model, batch_size=batch_size, log=_log)
        if output is not None:
            atomic_write_text(output, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        click.echo(f"lambada accuracy {result['accuracy']:.4f} ({result['correct']}/{result['total']})")


@main.command("generate")
@_url_option
@click.option("--prompt", "prompts", required=True, multiple=True, metavar="TEXT",
              help="the text to continue; repeat the option for a batch of several.")
@click.option("--max-output-len", type=click.IntRange(min=1), default=30, show_default=True,
              help="new tokens at most per prompt.")
@click.option("--top-k", type=click.IntRange(min=0), default=None, help="sample among the k likeliest tokens.")
@click.option("--top-p", type=float, default=None, help="sample within this probability mass (0, 1].")
@click.option("--temperature", type=float, default=None, help="sampling temperature (> 0).")
@click.option("--random-seed", type=int, default=None, help="seed of the sampling (the same seed, the same text).")
@click.option("--stop-word", "stop_words", multiple=True, metavar="TEXT", help="end a row at this text; repeatable.")
@click.option("--model", default="ensemble", show_default=True, help="the ensemble to ask.")
def generate_command(url, prompts, max_output_len, top_k, top_p, temperature, random_seed, stop_words,
                     model) -> None:
    """Send prompts to the served ensemble over HTTP and print each answer (greedy unless sampling is asked).

    \b
    Example:
      bignlp-export generate --url 127.0.0.1:8000 --prompt "In the beginning" --max-output-len 20
    """
    from .client import generate, http_client, server_errors

    with exit_on_error(PROG), server_errors(url):
        client = http_client(url)
        try:
            answer = generate(client, list(prompts), max_output_len, model=model, top_k=top_k, top_p=top_p,
                              temperature=temperature, random_seed=random_seed, stop_words=list(stop_words) or None)
        finally:
            client.close()
        for prompt, text in zip(prompts, answer.texts):
            click.echo(f"{prompt}{text}" if len(prompts) == 1 else f"{prompt!r} -> {text!r}")


@main.command("bench")
@_url_option
@click.option("--input-len", type=click.IntRange(min=1), default=60, show_default=True, help="prompt tokens.")
@click.option("--output-len", type=click.IntRange(min=1), default=20, show_default=True,
              help="new tokens per prompt (fewer when the model ends a row with its end-of-text token).")
@click.option("--batch-sizes", default="1,2,4,8", show_default=True, metavar="N,N,...",
              help="prompts per request.")
@click.option("--concurrency", default="1", show_default=True, metavar="N,N,...",
              help="clients sending at once (dynamic batching merges their requests).")
@click.option("--requests", "requests_per_client", type=click.IntRange(min=1), default=10, show_default=True,
              help="requests per client at each point.")
@click.option("--output", type=click.Path(path_type=Path), default=Path("results/bench_export"), show_default=True,
              metavar="DIR", help="where bench.csv and bench.png go.")
@click.option("--model", default="ensemble", show_default=True, help="the ensemble to ask.")
def bench_command(url, input_len, output_len, batch_sizes, concurrency, requests_per_client, output, model) -> None:
    """Latency (p50/p90/p99) and throughput per batch size and concurrency, as CSV and a PNG plot.

    \b
    Example:
      bignlp-export bench --url 127.0.0.1:8000 --input-len 60 --output-len 20 --batch-sizes 1,2,4,8 --concurrency 1,8
    """
    from .bench import run_bench, write_results
    from .client import server_errors

    with exit_on_error(PROG), server_errors(url):
        rows = run_bench(url, input_len=input_len, output_len=output_len, batch_sizes=_int_list(batch_sizes),
                         concurrency=_int_list(concurrency), requests_per_client=requests_per_client, model=model,
                         log=_log)
        csv_path, png_path = write_results(rows, output)
        click.echo(f"{'batch':>5} {'clients':>7} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'seq/s':>8} {'tok/s':>8}")
        for r in rows:
            click.echo(f"{r['batch_size']:>5} {r['concurrency']:>7} {r['latency_p50_ms']:>9.1f} "
                       f"{r['latency_p90_ms']:>9.1f} {r['latency_p99_ms']:>9.1f} {r['sequences_per_s']:>8.2f} "
                       f"{r['tokens_per_s']:>8.1f}")
        click.echo(f"{csv_path}\n{png_path}")
