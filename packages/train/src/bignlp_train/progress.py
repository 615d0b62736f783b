"""Progress lines for people and ``metrics.jsonl`` for programs."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bignlp_contracts import atomic_write_text, format_duration

METRICS_FILE = "metrics.jsonl"


class Progress:
    """Prints one line per logged step and appends every event to ``RUN_DIR/metrics.jsonl``.

    Appending keeps a resumed run's history in the same file; each record carries its step.
    """

    def __init__(self, run_dir: Path, *, max_steps: int, tokens_per_step: int, log: Callable[[str], None],
                 enabled: bool = True, flops_per_token: float = 0.0, num_devices: int = 1,
                 peak_tflops: float | None = None) -> None:
        self.enabled = enabled  # False on every rank but 0: one writer per file
        self.path = Path(run_dir) / METRICS_FILE
        self.max_steps = max_steps
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token  # model FLOPs (model.flops_per_token); 0: not shown
        self.num_devices = num_devices  # the job's processes: throughput per device
        self.peak_tflops = peak_tflops  # per device; None: no MFU
        self.log = log
        self._window_start = time.perf_counter()
        self._window_steps = 0

    def record(self, event: str, **fields: Any) -> None:
        """Append one JSON object (NaN/inf written as null)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, **clean, "time": round(time.time(), 3)}) + "\n")

    def forget_after(self, step: int) -> None:
        """Drop records past ``step`` (left by a run that died after its last checkpoint) before resuming."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def step_done(self) -> None:
        """Count a finished optimizer step towards the next line's timing."""
        self._window_steps += 1

    def train_step(self, step: int, *, loss: float, lr: float, grad_norm: float, consumed_samples: int) -> None:
        """Log a step: loss, lr, grad norm, throughput and ETA over the steps since the last line."""
        now = time.perf_counter()
        step_time = (now - self._window_start) / max(self._window_steps, 1)
        self._window_start, self._window_steps = now, 0
        tokens_per_s = self.tokens_per_step / step_time if step_time > 0 else 0.0
        eta = step_time * (self.max_steps - step)
        flops = {}
        compute = ""
        if self.flops_per_token > 0:
            tflops = tokens_per_s * self.flops_per_token / self.num_devices / 1e12
            flops["tflops_per_device"] = round(tflops, 4)
            compute = f" | {tflops:.3g} TFLOP/s/device"
            if self.peak_tflops:
                flops["mfu"] = round(tflops / self.peak_tflops, 4)
                compute += f" | MFU {100 * tflops / self.peak_tflops:.1f}%"
        self.log(
            f"step {step}/{self.max_steps} | loss {loss:.4f} | lr {lr:.3e} | grad norm {grad_norm:.3f} | "
            f"{tokens_per_s:,.0f} tok/s{compute} | {step_time:.2f} s/step | ETA {format_duration(eta)}"
        )
        self.record("train", step=step, loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=round(tokens_per_s, 1),
                    step_time_s=round(step_time, 4), consumed_samples=consumed_samples, **flops)

    def validation(self, step: int, val_loss: float, *, split: str = "validation") -> None:
        """Log and record a validation (or, with ``split="test"``, test) loss."""
        self.log(f"{split} loss at step {step}: {val_loss:.4f}")
        self.record(split, step=step, **{"val_loss" if split == "validation" else "test_loss": val_loss})

    def pause(self) -> None:
        """Call after validation/checkpointing so their time does not count as step time."""
        self._window_start = time.perf_counter()
        self._window_steps = 0
