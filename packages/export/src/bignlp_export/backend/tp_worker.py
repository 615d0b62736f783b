"""Tensor parallelism inside a Triton Python-backend instance (copied beside ``model.py`` as ``export_tp.py``).

An instance with ``tensor_parallel_size`` N > 1 is rank 0 of a process group of N: its ``initialize``
(in Triton's Python stub) starts N-1 workers, this file run as a script, with the same checkpoint,
dtype and thread count and one device each. All N join a gloo (CPU) or gloo+NCCL (GPU) group on a
free 127.0.0.1 port and load their shard of the checkpoint (``bignlp_models.tensor_parallel``).

Per batch, rank 0 sends every worker the rows (prompts and sampling settings, one JSON line on the
worker's stdin), then all N run ``generate_rows`` on the same rows in lockstep: the logits are
gathered over the vocabulary, so every rank picks the same tokens and stops at the same step (the
stop words are checked on every rank, from the same tokens). Rank 0 answers. The rows travel over
a pipe, not a collective, because a worker waits for the next batch for as long as the server is
idle, and a collective waiting that long would time out; the collectives of a generation run
under the group's timeout (``tp_timeout_s``).

Stopping: ``close`` (the instance's ``finalize``) sends "exit", then waits for each worker (bounded)
and kills one that is still there. A worker whose stdin closes (rank 0's process gone) exits too.
A worker that dies makes rank 0 fail the batch it is in (the collective errors or times out) and
every later one, with an error naming the worker, instead of hanging.

Imports torch and our libraries only (no ``triton_python_backend_utils``): the workers run outside Triton.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch

from bignlp_contracts.launch import free_port
from bignlp_models import stream_generate

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EXIT_WAIT_S = 10


@dataclass
class Row:
    request: int  # index of the request in execute()'s list
    prompt: list
    max_new: int
    greedy: bool
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop_words: list


@dataclass(frozen=True)
class Framing:
    """How the family frames generation: the ids generate stops at, pads with and starts the decoder from."""

    end_id: int
    pad_id: int
    start_id: int | None

    @classmethod
    def of(cls, loaded) -> Framing:
        tok = loaded.tokenizer
        if loaded.family.name == "gpt":
            return cls(tok.eod_id, tok.eod_id, None)
        # T5/mT5: framed as bignlp-train frames its examples
        return cls(tok.eos_id if tok.eos_id is not None else tok.sep_id, tok.pad_id if tok.pad_id is not None else 0,
                   tok.bos_id if tok.bos_id is not None else tok.cls_id)


def generate_rows(loaded, rows: list[Row], framing: Framing, device: torch.device, on_step=None) -> list[list[int]]:
    """New tokens of each row (all rows share their sampling: greedy, or one request's settings).

    A row ends at the end token (not kept), at its own ``max_new`` or once its text holds a stop word.
    ``on_step(new)``: after each step, that step's token of each row (None for rows already ended).
    Every tensor-parallel rank runs this on the same rows and takes the same decisions.
    """
    first = rows[0]
    produced = [[] for _ in rows]
    done = [False] * len(rows)
    steps = stream_generate(
        loaded.model, [r.prompt for r in rows], max_new_tokens=max(r.max_new for r in rows), greedy=first.greedy,
        temperature=first.temperature, top_k=first.top_k, top_p=first.top_p, seed=first.seed,
        stop_token_ids=[framing.end_id], pad_id=framing.pad_id, vocab_size=loaded.vocab_size, device=device,
        decoder_start_token_id=framing.start_id)
    for step in steps:
        new = [None] * len(rows)
        for i, token in enumerate(step):
            if done[i]:
                continue
            if token is None or token == framing.end_id:
                done[i] = True
                continue
            produced[i].append(token)
            new[i] = token
            row = rows[i]
            if len(produced[i]) >= row.max_new or (
                    row.stop_words and any(w in loaded.tokenizer.decode(produced[i]) for w in row.stop_words)):
                done[i] = True
        if on_step is not None:
            on_step(new)
        if all(done):
            break
    return produced


def _python() -> str:
    """The interpreter to run workers with: the stub's own Python (its venv's bin is first on PATH)."""
    if os.path.basename(sys.executable or "").startswith("python"):
        return sys.executable
    candidate = os.path.join(sys.prefix, "bin", "python3")
    return candidate if os.path.exists(candidate) else (shutil.which("python3") or sys.executable)


def _join_group(rank: int, world: int, port: int, device: str, timeout_s: float):
    """Join the group (gloo on the CPU; gloo for CPU tensors and NCCL for CUDA ones on a GPU); the "tp" mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("cpu:gloo,cuda:nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world,
                            init_method=f"tcp://127.0.0.1:{port}", timeout=timedelta(seconds=timeout_s))
    return init_device_mesh(kind, (world,), mesh_dim_names=("tp",))["tp"]


def _load(checkpoint: str, mesh, device: str, dtype: str, verify: str):
    import torch.distributed as dist

    from bignlp_models.tensor_parallel import load_model_tp

    loaded = load_model_tp(checkpoint, mesh, device=device, dtype=DTYPES[dtype], verify=verify)
    dist.barrier()  # every rank holds its shard
    return loaded


class TensorParallelGroup:
    """Rank 0's side: the workers it started, the group, and its shard of the model."""

    def __init__(self, checkpoint: str, devices: list[str], *, dtype: str, verify: str, num_threads: int = 0,
                 timeout_s: float = 300.0) -> None:
        self.devices, self.workers, self.broken = devices, [], None
        if len(set(devices)) < len(devices) and any(d.startswith("cuda") for d in devices):
            raise ValueError(f"tensor_parallel_size={len(devices)} needs {len(devices)} GPUs per instance, one per "
                             f"rank; this instance would put two ranks on one ({', '.join(devices)}: "
                             f"{torch.cuda.device_count()} visible)")
        port = free_port()
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.path.basename(__file__))
        for rank in range(1, len(devices)):
            cmd = [_python(), script, "--checkpoint", str(checkpoint), "--rank", str(rank), "--world",
                   str(len(devices)), "--port", str(port), "--device", devices[rank], "--dtype", dtype,
                   "--verify", verify, "--num-threads", str(num_threads), "--timeout-s", str(timeout_s)]
            self.workers.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True))
        try:
            self.loaded = self._while_workers_live(lambda: _load(
                checkpoint, _join_group(0, len(devices), port, devices[0], timeout_s), devices[0], dtype, verify))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (ranks 1..N-1)."""
        return [w.pid for w in self.workers]

    def check(self) -> None:
        """RuntimeError naming the first worker that exited, or why the group broke earlier."""
        for rank, worker in enumerate(self.workers, start=1):
            if worker.poll() is not None:
                self.broken = self.broken or (f"tensor-parallel worker rank {rank} (pid {worker.pid}) exited with "
                                              f"code {worker.returncode}")
        if self.broken:
            raise RuntimeError(f"{self.broken}: this model instance cannot generate; restart the server (or reload "
                               f"the model)")

    def _while_workers_live(self, fn):
        """``fn()`` in a thread, failing at once when a worker exits (a collective would wait for its timeout)."""
        result: dict = {}

        def target() -> None:
            try:
                result["value"] = fn()
            except BaseException as exc:  # handed to the caller
                result["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            if thread.is_alive():
                self.check()
        if "error" in result:
            raise result["error"]
        return result["value"]

    def generate(self, rows: list[Row], framing: Framing, on_step=None) -> list[list[int]]:
        """``generate_rows`` on every rank: the rows sent to the workers, then generated here too."""
        self.check()
        message = json.dumps({"op": "generate", "rows": [asdict(r) for r in rows]}) + "\n"
        try:
            for worker in self.workers:
                worker.stdin.write(message)
                worker.stdin.flush()
            return generate_rows(self.loaded, rows, framing, torch.device(self.devices[0]), on_step)
        except Exception as exc:  # a worker gone mid-batch: the collective or the pipe fails
            deadline = time.monotonic() + 2.0  # a dying worker's exit, to name it
            while time.monotonic() < deadline and all(w.poll() is None for w in self.workers):
                time.sleep(0.05)
            self.check()  # raises naming the worker that exited, if one did
            self.broken = f"tensor-parallel generation failed ({type(exc).__name__}: {exc})"
            self.check()
            raise

    def close(self) -> None:
        """Tell the workers to exit and wait for them (bounded), killing any still there; leave the group."""
        for worker in self.workers:
            try:
                if worker.poll() is None:
                    worker.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    worker.stdin.flush()
                worker.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + EXIT_WAIT_S
        for worker in self.workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=EXIT_WAIT_S)
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 (leaving a group whose peers are gone)
                pass


def main(argv: list[str] | None = None) -> int:
    """A worker: join the group, load its shard, then generate the rows rank 0 sends until "exit" or EOF."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--checkpoint", "--device", "--dtype", "--verify"):
        parser.add_argument(name, required=True)
    for name in ("--rank", "--world", "--port", "--num-threads"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    mesh = _join_group(args.rank, args.world, args.port, args.device, args.timeout_s)
    loaded = _load(args.checkpoint, mesh, args.device, args.dtype, args.verify)
    framing = Framing.of(loaded)
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "exit":
            break
        generate_rows(loaded, [Row(**r) for r in message["rows"]], framing, torch.device(args.device))
    import torch.distributed as dist

    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
