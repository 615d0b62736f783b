"""bignlp-dataprep: raw JSONL text → a Megatron ``.bin/.idx`` dataset artifact.

Library entry points: :func:`bignlp_dataprep.preprocess.preprocess` (JSONL files →
an artifact, from a :class:`~bignlp_dataprep.config.PreprocessConfig`) and
:func:`bignlp_dataprep.runner.run_recipe` (a recipe from
:func:`bignlp_dataprep.recipes.load_recipe`: download → extract → tokenizer →
preprocess → finalize, sharded by ``(rank, world_size)``). ``bignlp-dataprep preprocess`` and
``bignlp-dataprep run`` are thin CLIs over them.
"""

__version__ = "0.7.0"
