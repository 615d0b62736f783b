"""Tensor parallelism in the Triton Python backend: `--tensor-parallel 2` against a real tritonserver on 127.0.0.1.

An instance with tensor_parallel_size 2 is rank 0 of a gloo group with one worker process (export_tp.py)
it starts; the served answers must equal ``bignlp_models.generate`` in one process (TP=1), finalize must
leave no worker behind, and a worker that dies must fail requests with an error, not hang them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bignlp_export import client as C
from bignlp_models import generate, load_model

PROMPTS = ["The baker woke before dawn and", "Hello", "Mara packed her bag, locked the door, and walked"]


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bignlp_export", *args], capture_output=True, text=True,
                          timeout=timeout)


def workers_of(repo: Path) -> list[int]:
    """PIDs of the live tensor-parallel workers serving ``repo`` (their command line names its checkpoint)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline]
        if state != "Z" and any(a.endswith("export_tp.py") for a in args) and any(str(repo) in a for a in args):
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _ask(server, text, max_new):
    client = C.http_client(server.http)
    try:
        return C.generate(client, [text], max_new)
    finally:
        client.close()


def _reference(checkpoint, texts, max_new, kind="gpt"):
    loaded = load_model(checkpoint)
    tok = loaded.tokenizer
    if kind == "gpt":
        end, pad, start = tok.eod_id, tok.eod_id, None
    else:
        end = tok.eos_id if tok.eos_id is not None else tok.sep_id
        pad = tok.pad_id if tok.pad_id is not None else 0
        start = tok.bos_id if tok.bos_id is not None else tok.cls_id
    out = []
    for text in texts:
        tokens = generate(loaded.model, [tok.encode(text)], max_new_tokens=max_new, greedy=True, stop_token_ids=[end],
                          pad_id=pad, vocab_size=loaded.vocab_size, decoder_start_token_id=start).tokens[0]
        out.append(tokens[:-1] if tokens and tokens[-1] == end else tokens)
    return out


def test_gpt_tp2_served_equals_generate_finalize_stops_workers_and_a_dead_worker_fails_requests(
        gpt_checkpoint, triton_install, tmp_path):
    from export_helpers import served

    from bignlp_export.repository import export_repository

    repo = tmp_path / "repo"
    export_repository(gpt_checkpoint, repo, max_batch_size=4, num_threads=1, tensor_parallel=2)
    assert '"tensor_parallel_size" value: { string_value: "2" }' in (repo / "gpt" / "config.pbtxt").read_text()
    want = _reference(gpt_checkpoint, PROMPTS, 12)
    (tmp_path / "serve").mkdir()
    with served(repo, tmp_path / "serve") as server:
        pids = workers_of(repo)
        assert len(pids) == 2, pids  # one worker for each TP=2 instance: gpt and gpt_stream
        client = C.http_client(server.http)
        try:
            one_batch = C.generate(client, PROMPTS, 12)
            one_by_one = [C.generate(client, [p], 12) for p in PROMPTS]
            a = C.generate(client, [PROMPTS[0]], 10, top_k=0, temperature=1.0, random_seed=7)
            b = C.generate(client, [PROMPTS[0]], 10, top_k=0, temperature=1.0, random_seed=7)
        finally:
            client.close()
        streamed = [ids for _, ids in C.stream(server.grpc, PROMPTS[0], 8)]
        assert one_batch.ids == want and all(len(ids) == 12 for ids in want)
        assert [x.ids[0] for x in one_by_one] == want
        assert a.ids == b.ids and a.ids != [want[0][:10]]
        assert streamed == [[t] for t in want[0][:8]]

        # a worker killed: its instance (gpt or gpt_stream) answers with an error naming it, at once; the other
        # instance still answers
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(victim) and time.monotonic() < deadline:
            time.sleep(0.1)
        started, errors = time.monotonic(), []
        for ask in (lambda: _ask(server, PROMPTS[1], 4), lambda: list(C.stream(server.grpc, PROMPTS[1], 4))):
            try:
                ask()
            except Exception as exc:  # noqa: BLE001 (the error the server answered with)
                errors.append(str(exc))
        assert time.monotonic() - started < 30
        assert len(errors) == 1 and "tensor-parallel worker rank 1" in errors[0] and f"pid {victim}" in errors[0], \
            errors
    # finalize told the remaining worker to exit and joined it: nothing left behind
    assert not any(_alive(pid) for pid in pids), [pid for pid in pids if _alive(pid)]
    assert workers_of(repo) == []


def test_t5_tp2_served_equals_generate(triton_install, tmp_path):
    from convert_helpers import make_checkpoint
    from export_helpers import served

    from bignlp_export.repository import export_repository

    checkpoint = make_checkpoint(tmp_path / "ckpt", "t5v11")[0]
    repo = tmp_path / "repo"
    export_repository(checkpoint, repo, max_batch_size=4, num_threads=1, tensor_parallel=2)
    texts = ["the cat sat on the mat", "translate this sentence please"]
    want = _reference(checkpoint, texts, 6, kind="t5")
    (tmp_path / "serve").mkdir()
    with served(repo, tmp_path / "serve") as server:
        pids = workers_of(repo)
        client = C.http_client(server.http)
        try:
            answer = C.generate(client, texts, 6)
        finally:
            client.close()
    assert answer.ids == want and any(want)
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--tensor-parallel", "0"], 2, "'--tensor-parallel': 0 is not in the range x>=1"),
    (["--tensor-parallel", "3"], 2, "does not divide the model's 4 attention heads"),
    (["--tensor-parallel", "2", "--pipeline-parallel", "2"], 2, "not both"),
    (["model.tensor_model_parallel_size=0"], 2, "model.tensor_model_parallel_size=0: must be at least 1"),
])
def test_bad_tensor_parallel_refused_before_writing(gpt_checkpoint, tmp_path, args, code, message):
    out = tmp_path / "repo"
    result = _run("triton", "--checkpoint", str(gpt_checkpoint), "--output", str(out), *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_launcher_key_sets_the_tensor_parallel_size(gpt_checkpoint, tmp_path):
    out = tmp_path / "repo"
    result = _run("triton", "--checkpoint", str(gpt_checkpoint), "--output", str(out),
                  "model.tensor_model_parallel_size=2")
    assert result.returncode == 0, result.stderr
    for model in ("gpt", "gpt_stream"):
        assert '"tensor_parallel_size" value: { string_value: "2" }' in (out / model / "config.pbtxt").read_text()
        assert (out / model / "1" / "export_tp.py").is_file()
    assert json_summary(out)["tensor_model_parallel_size"] == 2


def json_summary(repo: Path) -> dict:
    from bignlp_contracts import read_manifest

    return read_manifest(repo, "triton-repository", verify="size").summary


MID_BATCH = """
import os, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
from tp_worker import Framing, Row, TensorParallelGroup

group = TensorParallelGroup(sys.argv[2], ["cpu", "cpu"], dtype="fp32", verify="size", num_threads=1, timeout_s=60)
framing = Framing.of(group.loaded)
rows = [Row(0, [464, 3290], 60, True, 1.0, 1, 1.0, 0, []), Row(0, [15496], 60, True, 1.0, 1, 1.0, 0, [])]
steps = []
assert len(group.generate(rows, framing, on_step=steps.append)[0]) == 60
victim = group.pids[0]
steps.clear()
threading.Thread(target=lambda: (time.sleep(0.3), os.kill(victim, signal.SIGKILL)), daemon=True).start()
started = time.monotonic()
try:
    group.generate(rows, framing, on_step=steps.append)
    print("NO ERROR")
except RuntimeError as exc:
    print(f"ERROR after {len(steps)} steps, {time.monotonic() - started:.1f} s: {exc}")
started = time.monotonic()
try:
    group.generate(rows, framing)
except RuntimeError as exc:
    print(f"AGAIN after {time.monotonic() - started:.1f} s: {exc}")
group.close()
print("victim", victim)
"""


def test_a_worker_killed_mid_batch_fails_it_with_an_error_not_a_hang(gpt_checkpoint, tmp_path):
    """Rank 0's side alone (no Triton): a worker killed while a 60-step generation is under way."""
    from bignlp_export.repository import BACKEND

    script = tmp_path / "mid_batch.py"
    script.write_text(MID_BATCH)
    shutil.copyfile(BACKEND / "tp_worker.py", tmp_path / "tp_worker.py")
    out = subprocess.run([sys.executable, str(script), str(tmp_path), str(gpt_checkpoint)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    victim = lines[-1].split()[1]
    error = next(line for line in lines if line.startswith("ERROR"))
    assert f"tensor-parallel worker rank 1 (pid {victim}) exited with code -9" in error, out.stdout
    assert float(error.split(", ")[1].split()[0]) < 30, error  # the collective failed, it did not wait its timeout
    assert int(error.split()[2]) < 60  # mid-batch
    again = next(line for line in lines if line.startswith("AGAIN"))
    assert f"pid {victim}" in again and float(again.split()[2]) < 1
