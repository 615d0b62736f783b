"""``bignlp-csp-validate``: the command-line skin (the only module importing click)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import click

from bignlp_contracts import BigNLPError, ConfigError, discover_run_env, exit_on_error

from . import __version__
from .busbw import COLLECTIVES, parse_size
from .csp import CSPS, get_csp, render_env
from .launch import NODE_NAME_ENV, launch_local
from .topology import ndv4_layout, ndv4_topology_xml

PROG = "bignlp-csp-validate"
SLOW_NODE_ENV = "BIGNLP_CSP_VALIDATE_SLOW_NODE"
DEFAULT_OUTPUT = "results/cluster_validation"


class Size(click.ParamType):
    """Bytes, or a K/M/G suffix (binary units, as nccl-tests' -b/-e)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ConfigError as exc:
            self.fail(exc.message, param, ctx)


def test_options(func):
    """The options shared by ``run`` and ``worker``: what to test, how, and where the result goes."""
    options = [
        click.option("--dcgm", "dcgm_only", is_flag=True, help="Run the GPU diagnostics only."),
        click.option("--nccl", "nccl_only", is_flag=True, help="Run the bandwidth tests only."),
        click.option("--csp", type=click.Choice(sorted(CSPS)), default="azure", show_default=True,
                     help="Cloud whose node-pair bus bandwidth threshold applies "
                          "(azure 180, oci 170, aws 35 GB/s)."),
        click.option("--threshold-gbps", type=float, default=None,
                     help="Node-pair all_reduce bus bandwidth (GB/s) below which a pair fails; "
                          "overrides the --csp default."),
        click.option("--min-bytes", type=Size(), default="1K", show_default=True,
                     help="Smallest message size of the sweep (bytes or K/M/G)."),
        click.option("--max-bytes", type=Size(), default="1G", show_default=True,
                     help="Largest message size of the sweep; sizes double from --min-bytes."),
        click.option("--pair-bytes", type=Size(), default=None,
                     help="Message size of the node-pair tests [default: --max-bytes]."),
        click.option("--iters", type=int, default=20, show_default=True, help="Timed calls per size."),
        click.option("--warmup", type=int, default=5, show_default=True, help="Untimed calls before timing."),
        click.option("--ops", default=",".join(COLLECTIVES), show_default=True,
                     help="Comma-separated collectives to sweep."),
        click.option("--backend", type=click.Choice(["auto", "nccl", "gloo"]), default="auto", show_default=True,
                     help="torch.distributed backend; auto = NCCL when CUDA GPUs are usable, else gloo."),
        click.option("--dcgm-level", type=click.IntRange(1, 4), default=3, show_default=True,
                     help="dcgmi diag run level (1 quick ... 4 longest)."),
        click.option("--timeout-s", type=float, default=1800.0, show_default=True,
                     help="Limit for joining the job, each collective and the diagnostics."),
        click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUTPUT,
                     show_default=True, help="Result artifact directory (replaced atomically)."),
        # Test only: makes one node sleep before each collective so a test can show the report naming it.
        click.option("--inject-slow-node", envvar=SLOW_NODE_ENV, default=None, hidden=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _worker_args(params: dict) -> list[str]:
    """The ``worker`` command line that repeats ``run``'s test options."""
    args = []
    if params["dcgm_only"]:
        args.append("--dcgm")
    if params["nccl_only"]:
        args.append("--nccl")
    for key in ("csp", "threshold_gbps", "min_bytes", "max_bytes", "pair_bytes", "iters", "warmup", "ops",
                "backend", "dcgm_level", "timeout_s", "output_dir", "inject_slow_node"):
        if params[key] is not None:
            args += [f"--{key.replace('_', '-')}", str(params[key])]
    return args


def _options(params: dict, expected_nodes: int | None):
    from .worker import ValidateOptions  # imports torch: keep `env`/`topology`/--help fast

    run_dcgm = params["dcgm_only"] or not params["nccl_only"]
    run_nccl = params["nccl_only"] or not params["dcgm_only"]
    return ValidateOptions(
        run_dcgm=run_dcgm, run_nccl=run_nccl, csp=params["csp"], threshold_gbps=params["threshold_gbps"],
        min_bytes=params["min_bytes"], max_bytes=params["max_bytes"], pair_bytes=params["pair_bytes"],
        warmup=params["warmup"], iters=params["iters"],
        ops=tuple(o.strip() for o in params["ops"].split(",") if o.strip()),
        backend=params["backend"], dcgm_level=params["dcgm_level"], expected_nodes=expected_nodes,
        timeout_s=params["timeout_s"], slow_node=params["inject_slow_node"],
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Validate a GPU cluster before a long training run (the seed's cluster_validation.sh).

    'run' checks GPU health on every node (dcgmi diag, else nvidia-smi) and measures
    all_reduce, all_gather, reduce_scatter and broadcast bus bandwidth from 1 KB to
    1 GB, then tests every pair of nodes and lists the nodes whose pairs fall below
    the CSP's threshold. The exit code says whether the cluster passed (0 passed,
    1 failed, 2 bad options). 'topology' writes the NCCL topology file for Azure NDv4;
    'env' prints the NCCL/UCX variables to set for each CSP.

    Example:

    \b
        bignlp-csp-validate run --nodes 8 --nodelist 'hpc-pg0-[1-8]' --partition hpc
        bignlp-csp-validate run --local --nproc 2 --max-bytes 4M --threshold-gbps 0.01
        bignlp-csp-validate topology --output /opt/microsoft/ndv4-topo.xml
        bignlp-csp-validate env --csp azure
    """


@main.command()
@click.option("--nodes", "num_nodes", type=int, default=None,
              help="Number of nodes to test (required unless --local).")
@click.option("--nodelist", default=None,
              help="Nodes to test, in Slurm hostlist syntax as sinfo prints it: hpc-pg0-[1-8].")
@click.option("--partition", default=None, help="Slurm partition of the nodes (checked with sinfo).")
@click.option("--gpus-per-node", type=int, default=None,
              help="Worker tasks per node under srun, one per GPU; the CSP thresholds are for 8-GPU nodes "
                   "[default: 1 with --backend gloo, else 8].")
@click.option("--local", is_flag=True, help="Run on this machine only, without Slurm.")
@click.option("--nproc", type=int, default=2, show_default=True,
              help="With --local: worker processes, each treated as a node named local<rank>.")
@test_options
def run(num_nodes, nodelist, partition, gpus_per_node, local, nproc, **params) -> None:
    """Run the diagnostics and bandwidth tests across nodes; exit 0 if the cluster passed, 1 if not.

    Without --local it checks the request against Slurm (partition, node list, node
    count), then starts one worker per GPU on each node with srun and waits; the
    report lists the nodes to replace or restart. With --local it runs --nproc
    workers on this machine (gloo on CPU, NCCL on GPUs).

    Example:

    \b
        bignlp-csp-validate run --nodes 8 --nodelist 'hpc-pg0-[1-8]' --partition hpc
        bignlp-csp-validate run --nodes 2 --partition hpc --nccl --csp oci
        bignlp-csp-validate run --local --nproc 2 --max-bytes 4M --iters 5 --threshold-gbps 0.01
    """
    with exit_on_error(PROG):
        _options(params, num_nodes).check()
        if local:
            if nproc < 1:
                raise ConfigError(f"--nproc must be at least 1, got {nproc}")
            if nodelist or partition:
                raise click.UsageError("--nodelist and --partition select Slurm nodes; drop them with --local")
            expected = ["--nodes", str(num_nodes)] if num_nodes is not None else []
            sys.exit(launch_local([*_worker_args(params), *expected], nproc))
        from .slurm import check_request, srun_command

        if num_nodes is None:
            raise click.UsageError("--nodes is required (or use --local --nproc N)")
        check_request(num_nodes, nodelist, partition)
        tasks = gpus_per_node or (1 if params["backend"] == "gloo" else 8)
        cmd = srun_command(num_nodes, nodelist, partition, tasks, [*_worker_args(params), "--nodes", str(num_nodes)])
        click.echo(f"{PROG}: {' '.join(cmd)}", err=True)
        sys.exit(subprocess.run(cmd, check=False).returncode)


@main.command()
@click.option("--nodes", "num_nodes", type=int, default=None,
              help="Expected number of nodes; fewer joining the job is an error.")
@test_options
def worker(num_nodes, **params) -> None:
    """One rank of a validation job (what 'run' and the sbatch template start under srun).

    Rank and world come from torchrun or Slurm variables (SLURM_PROCID, SLURM_NTASKS,
    ...); the node name from SLURMD_NODENAME, else the hostname. Rank 0 prints the
    table, writes the artifact to --output-dir and exits 1 if the cluster failed.

    Example:

    \b
        srun --ntasks-per-node=8 bignlp-csp-validate worker --nodes "$SLURM_JOB_NUM_NODES" \\
          --output-dir results/cluster_validation
    """
    from .report import render_table, write_artifact
    from .worker import validate

    run_env = discover_run_env()
    node = os.environ.get(NODE_NAME_ENV) or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        with exit_on_error(PROG) if run_env.rank == 0 else _quiet_errors():
            opts = _options(params, num_nodes)
            result = validate(opts, node_name=node, run_env=run_env)
            if result is None:
                return
            config = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
            out = write_artifact(result, params["output_dir"], config={**config, "nodes": num_nodes})
            click.echo(render_table(result), nl=False)
            click.echo(f"{PROG}: result in {out}/result.json", err=True)
    finally:
        sys.stdout.flush()
    if not result["passed"]:
        sys.exit(1)


@contextlib.contextmanager
def _quiet_errors():
    """Ranks other than 0 exit with the error's code without repeating rank 0's message."""
    try:
        yield
    except BigNLPError as exc:
        raise SystemExit(exc.exit_code) from None


@main.command()
@click.option("--output", "-o", default="-", show_default=True,
              help="Where to write the XML (atomically); - for stdout, as the seed's sbatch -o.")
@click.option("--source", type=click.Choice(["auto", "host", "documented"]), default="auto", show_default=True,
              help="host: read GPU/NIC bus ids and NUMA nodes from this node; documented: the NDv4 layout; "
                   "auto: host if it is an 8-GPU 8-NIC node, else documented.")
def topology(output, source) -> None:
    """Write the NCCL topology file for Azure NDv4 (the seed's gentopo.sh job).

    Then set NCCL_TOPO_FILE to it and mount its directory into the container.

    Example:

    \b
        sbatch -N 1 -o ndv4-topo.xml --wrap 'bignlp-csp-validate topology'
        bignlp-csp-validate topology --output /opt/microsoft/ndv4-topo.xml
    """
    from bignlp_contracts import atomic_write_text

    with exit_on_error(PROG):
        layout, origin = ndv4_layout(source)
        xml = ndv4_topology_xml(layout)
        if output == "-":
            click.echo(xml, nl=False)
        else:
            atomic_write_text(output, xml)
            click.echo(f"{PROG}: wrote {output} ({origin} NDv4 layout)", err=True)
        if origin == "documented" and source == "auto":
            click.echo(f"{PROG}: this node is not an NDv4 (8 GPUs + 8 IB NICs not found): "
                       "used the documented NDv4 bus ids", err=True)


@main.command()
@click.option("--csp", "csp_name", default=None, help=f"One CSP ({', '.join(CSPS)}) [default: all].")
@click.option("--format", "style", type=click.Choice(["yaml", "shell"]), default="yaml", show_default=True,
              help="yaml: the env_vars block of conf/config.yaml; shell: export lines for an sbatch script.")
def env(csp_name, style) -> None:
    """Print the recommended NCCL/UCX environment variables for each CSP (seed section 4.1.3).

    Example:

    \b
        bignlp-csp-validate env --csp azure
        bignlp-csp-validate env --csp aws --format shell >> my-job.sbatch
    """
    with exit_on_error(PROG):
        names = [get_csp(csp_name).name] if csp_name else list(CSPS)
        click.echo("\n".join(render_env(CSPS[n], style) for n in names), nl=False)


