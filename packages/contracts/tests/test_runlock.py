"""One writer per run directory: the lock, its holder record, a dead holder's take-over, a requeue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bignlp_contracts import (
    ConfigError,
    LockHolder,
    RunDirBusyError,
    lock_run_dir,
    probe_run_lock,
    read_lock_holder,
)
from bignlp_contracts.runlock import LOCK_NAME

# A separate process takes the lock, says so, and waits to be killed (or released through stdin).
HOLDER = """
import sys
from bignlp_contracts import lock_run_dir
lock = lock_run_dir(sys.argv[1], command="holder")
print("locked", flush=True)
sys.stdin.readline()
lock.release()
"""


def start_holder(run_dir, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_lock_records_the_holder_and_release_empties_it(tmp_path):
    env = {"SLURM_JOB_ID": "77"}
    with lock_run_dir(tmp_path / "run", command="bignlp-train pretrain", environ=env) as lock:
        assert lock.held and lock.previous is None
        holder = read_lock_holder(tmp_path / "run")
        assert holder == lock.holder and holder.pid == os.getpid() and holder.slurm_job_id == "77"
        assert set(json.loads((tmp_path / "run" / LOCK_NAME).read_text())) == {
            "host", "pid", "command", "started_at", "slurm_job_id", "slurm_restart_count"}
        with pytest.raises(RunDirBusyError):  # a second lock in the same process is refused too
            lock_run_dir(tmp_path / "run", command="again")
    assert not lock.held and (tmp_path / "run" / LOCK_NAME).read_text() == ""
    assert read_lock_holder(tmp_path / "run") is None
    with lock_run_dir(tmp_path / "run", command="next") as again:
        assert again.previous is None  # a clean release is no take-over


def test_second_run_is_refused_naming_the_first(tmp_path):
    proc = start_holder(tmp_path, SLURM_JOB_ID="1234")
    try:
        started = time.monotonic()
        with pytest.raises(RunDirBusyError) as info:
            lock_run_dir(tmp_path, command="second", hint="use another directory")
        assert time.monotonic() - started < 1.0
        line = info.value.one_line()
        assert line.startswith(f"run directory {tmp_path} is in use by holder (pid {proc.pid} on ")
        assert ", Slurm job 1234, since " in line and line.endswith("(fix: use another directory)")
        assert isinstance(info.value, ConfigError) and info.value.exit_code == 2
        with pytest.raises(RunDirBusyError, match=f"pid {proc.pid}"):
            probe_run_lock(tmp_path)
    finally:
        proc.communicate("\n", timeout=30)
    probe_run_lock(tmp_path)  # free again
    probe_run_lock(tmp_path / "never-used")  # no lock file: nothing to say, nothing written
    assert not (tmp_path / "never-used").exists()


def test_a_killed_holder_is_taken_over_with_one_notice(tmp_path):
    proc = start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    dead = read_lock_holder(tmp_path)
    assert dead is not None and dead.pid == proc.pid  # the record outlives the holder; the flock does not
    lines = []
    with lock_run_dir(tmp_path, command="next", log=lines.append) as lock:
        assert lock.previous == dead
    assert lines == [f"run directory {tmp_path}: taking over the lock of {dead.describe()}, which ended without "
                     "releasing it (killed, or its node failed)"]


def test_a_requeued_slurm_job_waits_for_its_previous_attempt(tmp_path):
    proc = start_holder(tmp_path, SLURM_JOB_ID="55")
    lines = []
    try:
        with pytest.raises(RunDirBusyError):  # the same attempt (no restart count change): busy at once
            lock_run_dir(tmp_path, command="x", environ={"SLURM_JOB_ID": "55"})
        started = time.monotonic()
        with pytest.raises(RunDirBusyError):
            lock_run_dir(tmp_path, command="x", log=lines.append, requeue_wait_s=1.0,
                         environ={"SLURM_JOB_ID": "55", "SLURM_RESTART_COUNT": "1"})
        assert 1.0 <= time.monotonic() - started < 5.0
        assert len(lines) == 1 and "waiting up to 1 s for the lock of the previous attempt of Slurm job 55" in lines[0]
    finally:
        proc.communicate("\n", timeout=30)


def test_holder_record_round_trip():
    holder = LockHolder(host="n1", pid=5, command="c", started_at="t", slurm_job_id="9", slurm_restart_count=2)
    assert LockHolder.from_text(holder.to_json()) == holder
    assert LockHolder.from_text("") is None and LockHolder.from_text("{not json") is None
    assert holder.describe() == "c (pid 5 on n1, Slurm job 9, since t)"
