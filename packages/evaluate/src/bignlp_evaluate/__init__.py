"""bignlp-evaluate: zero-shot evaluation of BigNLP GPT checkpoints on lm-evaluation-harness tasks, offline.

- ``tasks``: the seed's tasks (lambada, boolq, race, piqa, hellaswag, winogrande, wikitext2,
  wikitext103), their JSONL files and the lm-eval task overrides that read them.
- ``lm``: ``BigNLPLM``, an lm-eval model over ``bignlp_models.load_model``.
- ``harness``: ``evaluate_checkpoint`` → an ``evaluation`` artifact.
- ``results``: the seed's results table (results.md / results.csv).
- ``download``: fetching task files (``bignlp_contracts.download``).
- ``config``: the launcher's evaluation keys.
"""

__version__ = "0.1.0"
