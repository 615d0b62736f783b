"""BigNLP's model families in plain PyTorch, and what every stage needs to use them.

- ``layers``: building blocks (attention with Megatron names and fused per-head QKV, MLP, embeddings).
- ``gpt``: the GPT-3-style decoder.
- ``t5``: the T5/mT5 encoder-decoder.
- ``spec``: one ``FamilySpec`` per family; ``get_family(name)``.
- ``checkpoint``: ``load_model(checkpoint)`` for inference (weights only), over one device or several.
- ``generate``: batched generation with a KV cache (``KVCache`` in ``layers``), greedy or sampled, for
  every family (``decoding``: the per-family adapter, decoder-only or encoder-decoder).
- ``tensor_parallel``: Megatron's tensor parallelism from each family's plan (``apply_tp``, training's and
  inference's), and ``load_model_tp`` (a checkpoint sharded over a TP process group, for ``generate``).
  Imported on its own (``bignlp_models.tensor_parallel``): it pulls in torch's DTensor machinery.
"""

from .checkpoint import (
    CheckpointReader,
    LoadedModel,
    load_model,
    load_state_dict_only,
    open_checkpoint,
    save_model_checkpoint,
)
from .generate import Generation, PromptError, Sampling, generate, sample_logits, stream_generate
from .gpt import GPT, GPTConfig, build_model
from .layers import KVCache
from .losses import lm_loss
from .spec import FAMILIES, GPT_SPEC, T5_SPEC, FamilySpec, family_of, get_family, num_parameters
from .t5 import T5, T5Config
from .vocab import padded_vocab_size

__version__ = "0.3.0"

__all__ = [
    "FAMILIES", "GPT", "GPT_SPEC", "FamilySpec", "GPTConfig", "build_model", "family_of", "get_family", "lm_loss",
    "num_parameters", "padded_vocab_size", "T5", "T5Config", "T5_SPEC",
    "CheckpointReader", "LoadedModel", "load_model", "load_state_dict_only", "open_checkpoint",
    "save_model_checkpoint",
    "Generation", "KVCache", "PromptError", "Sampling", "generate", "sample_logits", "stream_generate",
]
