"""bignlp-dataprep: raw JSONL text → a Megatron ``.bin/.idx`` dataset artifact.

The library entry point is :func:`bignlp_dataprep.preprocess.preprocess`, which
takes a :class:`~bignlp_dataprep.config.PreprocessConfig` and returns the
artifact's manifest; ``bignlp-dataprep preprocess`` is a thin CLI over it.
"""

__version__ = "0.1.0"
