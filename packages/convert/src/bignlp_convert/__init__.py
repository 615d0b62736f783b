"""bignlp-convert: model checkpoints to and from NeMo 1.x ``.nemo`` archives and Hugging Face models.

- ``nemo``: ``to_nemo`` / ``from_nemo`` (any tensor/pipeline layout; streamed ``torch.save`` files).
- ``hf``: ``to_hf`` / ``from_hf`` (safetensors, ``config.json``, tokenizer files ``AutoTokenizer`` loads).
- ``maps``: the per-family name maps, the only place that names GPT or T5 weights.
- ``stream``: reading a checkpoint a layer at a time, with progress.
- ``output``: where an artifact may be written, and writing it so a crash leaves nothing that looks complete.
- ``config``: the NeMo launcher's conversion keys (``conversion.model.*``, ``conversion.run.*``).

``bignlp-convert`` (``cli``) is a thin click layer over these.
"""

__version__ = "0.1.0"
