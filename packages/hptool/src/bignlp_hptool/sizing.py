"""Model-size recommendation and time to train (the launcher's ``calculate_model_size``).

Training costs about 8 FLOPs per parameter and token: 6 for forward + backward, 2 for
recomputing activations (NeMo's auto-configurator). So, at ``tflops_per_gpu`` on every GPU,

    size [B] = days · 86400 · GPUs · TFLOP/s · 1e12 / (8 · tokens) / 1e9      (× 0.87 for mT5)

and time to train is its inverse (× 1.15 for mT5, whose 250k vocabulary costs more per parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

SIZE_FACTOR = {"gpt3": 1.0, "t5": 1.0, "mt5": 0.87}
TIME_FACTOR = {"gpt3": 1.0, "t5": 1.0, "mt5": 1.15}
FLOPS_PER_PARAM_TOKEN = 8  # 6 train + 2 recompute


@dataclass(frozen=True)
class SizeEstimate:
    """The size trained and how long it takes; which of the two was computed."""

    model_size_in_b: float
    max_training_days: float
    recommended: bool  # the size was recommended (model_size_in_b was null)
    num_gpus: int
    tflops_per_gpu: float
    num_tokens_in_b: float

    def lines(self, model_type: str) -> list[str]:
        """What the CLI prints and the results record."""
        what = "recommended model size" if self.recommended else "model size"
        return [f"{what}: {self.model_size_in_b:g}B parameters ({model_type})",
                f"time to train {self.num_tokens_in_b:g}B tokens on {self.num_gpus} GPUs at "
                f"{self.tflops_per_gpu:g} TFLOP/s each: {self.max_training_days:.2f} days"]


def recommend_model_size(model_type: str, *, num_gpus: int, max_training_days: float,
                         tflops_per_gpu: float = 140, num_tokens_in_b: float = 300) -> float:
    """Billions of parameters trainable on ``num_gpus`` in ``max_training_days`` (rounded to 0.01B as the launcher)."""
    flops = max_training_days * 86400 * num_gpus * tflops_per_gpu * 1e12
    size = flops / (FLOPS_PER_PARAM_TOKEN * num_tokens_in_b * 1e9) / 1e9
    return round(SIZE_FACTOR[model_type] * size, 2)


def estimate_training_days(model_type: str, *, model_size_in_b: float, num_gpus: int,
                           tflops_per_gpu: float = 140, num_tokens_in_b: float = 300) -> float:
    """Days to train ``model_size_in_b`` on ``num_tokens_in_b`` with ``num_gpus`` at ``tflops_per_gpu``."""
    flops = FLOPS_PER_PARAM_TOKEN * model_size_in_b * 1e9 * num_tokens_in_b * 1e9
    return TIME_FACTOR[model_type] * flops / (num_gpus * tflops_per_gpu * 1e12) / 86400


def size_and_time(model_type: str, settings) -> SizeEstimate:
    """Both figures from ``train_settings``: the size when it is null, the time always."""
    num_gpus = settings.num_nodes * settings.gpus_per_node
    common = dict(num_gpus=num_gpus, tflops_per_gpu=settings.tflops_per_gpu, num_tokens_in_b=settings.num_tokens_in_b)
    recommended = settings.model_size_in_b is None
    size = (recommend_model_size(model_type, max_training_days=settings.max_training_days, **common)
            if recommended else settings.model_size_in_b)
    days = estimate_training_days(model_type, model_size_in_b=size, **common)
    return SizeEstimate(model_size_in_b=size, max_training_days=days, recommended=recommended, **common)
