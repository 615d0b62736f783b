import subprocess
import sys

import pytest

from bignlp_contracts import ConfigError, discover_run_env, expand_hostlist


def test_single_process_default():
    env = discover_run_env({})
    assert (env.rank, env.world_size, env.source) == (0, 1, "single")


def test_torchrun_variables():
    env = discover_run_env(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1",
         "MASTER_PORT": "1234", "GROUP_RANK": "1"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.node_rank, env.master_addr, env.master_port) == (
        3, 4, 1, 1, "n1", 1234)
    assert env.torch_env()["WORLD_SIZE"] == "4"


def test_slurm_variables():
    env = discover_run_env(
        {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
         "SLURM_JOB_NODELIST": "gpu[07-09,12]", "SLURM_TASKS_PER_NODE": "2(x4)", "SLURM_JOB_ID": "4242",
         "SLURM_STEP_ID": "0"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.node_rank) == (5, 8, 1, 2)
    assert env.master_addr == "gpu07" and env.local_world_size == 2 and env.source == "slurm"
    assert env.master_port == 15000 + 4242 % 20000


def test_slurm_two_nodes_one_task_each_uses_exported_master():
    # train.sbatch exports the first node's NodeAddr (emulated nodes share 127.0.0.1) and a port.
    base = {"SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "1(x2)",
            "SLURM_JOB_ID": "17", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "23456", "SLURM_LOCALID": "0",
            "SLURM_STEP_ID": "0"}
    envs = [discover_run_env({**base, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)}) for r in (0, 1)]
    assert [(e.rank, e.node_rank, e.local_rank, e.local_world_size) for e in envs] == [(0, 0, 0, 1), (1, 1, 0, 1)]
    assert {(e.master_addr, e.master_port, e.world_size) for e in envs} == {("127.0.0.1", 23456, 2)}
    # Without the exported address every task takes the node list's first host, and one port per job.
    bare = {k: v for k, v in base.items() if not k.startswith("MASTER_")}
    assert (discover_run_env({**bare, "SLURM_PROCID": "1"}).master_addr,
            discover_run_env({**bare, "SLURM_PROCID": "1"}).master_port) == ("n1", 15000 + 17)


def test_batch_script_outside_srun_is_one_process():
    # What the batch step of `sbatch --nodes=2 --ntasks-per-node=1` sees (no SLURM_STEP_ID): a
    # training run started there without srun must not wait for a second rank that never comes.
    env = discover_run_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "n[1-2]",
                            "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_JOB_ID": "5"})
    assert (env.world_size, env.source) == (1, "single")


def test_bad_slurm_value():
    with pytest.raises(ConfigError, match="SLURM_NTASKS='x' is not an integer"):
        discover_run_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "x", "SLURM_STEP_ID": "0"})


@pytest.mark.parametrize(
    "spec, hosts",
    [
        ("node1", ["node1"]),
        ("a[1-3]", ["a1", "a2", "a3"]),
        ("gpu[007-009],cpu1", ["gpu007", "gpu008", "gpu009", "cpu1"]),
        ("r[1-2]-x", ["r1-x", "r2-x"]),
    ],
)
def test_expand_hostlist(spec, hosts):
    assert expand_hostlist(spec) == hosts


@pytest.mark.parametrize("spec", ["a[1-", "a[x-2]", ""])
def test_expand_hostlist_rejects(spec):
    with pytest.raises(ConfigError, match="node list"):
        expand_hostlist(spec)


def test_exit_on_error_prints_one_line():
    code = (
        "from bignlp_contracts import exit_on_error, ConfigError\n"
        "with exit_on_error('tool'):\n"
        "    raise ConfigError('bad key x', hint='use y')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == "tool: error: bad key x (fix: use y)\n"
