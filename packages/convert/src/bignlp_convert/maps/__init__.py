"""Per-family name maps: the only modules of bignlp-convert that name a family's weights.

``nemo_gpt`` / ``nemo_t5``: our names ↔ NeMo 1.x's (``model_config.yaml`` keys, state-dict keys,
tensor-parallel split dimension of each weight). ``hf_gpt`` / ``hf_t5``: our names ↔ Hugging Face's
(``config.json``, state-dict keys, per-tensor transforms). The converters look a map up by the
checkpoint's ``summary.family`` and never name a module themselves.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bignlp_contracts import ArtifactError

_NEMO = {"gpt": "nemo_gpt", "t5": "nemo_t5"}
_HF = {"gpt": "hf_gpt", "t5": "hf_t5"}


def _get(table: dict[str, str], family: str, what: str) -> ModuleType:
    if family not in table:
        raise ArtifactError(f"no {what} name map for model family {family!r} (known: {', '.join(sorted(table))})",
                            hint="upgrade bignlp-convert")
    return importlib.import_module(f"{__name__}.{table[family]}")


def nemo_map(family: str) -> ModuleType:
    """The NeMo 1.x name map of ``family`` (``gpt`` or ``t5``)."""
    return _get(_NEMO, family, "NeMo")


def hf_map(family: str) -> ModuleType:
    """The Hugging Face name map of ``family`` (``gpt`` or ``t5``)."""
    return _get(_HF, family, "Hugging Face")
