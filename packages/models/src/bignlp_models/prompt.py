"""Virtual prompts on a frozen model: the prompt table, p-tuning's encoders, and how prompts enter the input.

NeMo's prompt learning in plain PyTorch. A task owns ``total_virtual_tokens`` rows of hidden width;
they stand where its template says ``<|VIRTUAL_PROMPT_n|>``. In token ids a virtual token is
``vocab_size + row`` (the rows of every task side by side, task after task), so prompts are ordinary
id lists for training and for ``generate``. ``install_prompts`` swaps the model's input token
embedding for a ``PromptedEmbedding`` that shares its weight and looks ids past the vocabulary up
in the prompt table; ids inside the vocabulary take the very same ``F.embedding`` path as before,
so the model's outputs without virtual tokens are bit-identical.

- prompt tuning (Lester et al. 2021): a task's rows are parameters, initialised randomly or from
  the embeddings of an init text;
- p-tuning (Liu et al. 2021): an ``Embedding(total_virtual_tokens, h)`` through a bidirectional
  LSTM (hidden h/2 per direction, ``num_layers``) and Linear-ReLU-Linear, or through an MLP;
  after training the encoder's output is folded into the table (``PromptTable.fold``) and the
  encoder is dropped.

Rows of tasks learned earlier are a buffer, never a parameter: adding a task cannot move them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_TYPES = ("lstm", "mlp")
STYLES = ("p-tuning", "prompt-tuning")


class PromptEncoder(nn.Module):
    """p-tuning's reparametrisation: learned input rows → LSTM or MLP → the task's virtual token embeddings."""

    def __init__(self, num_tokens: int, hidden_size: int, *, encoder_type: str = "lstm", num_layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if encoder_type not in ENCODER_TYPES:
            raise ValueError(f"encoder_type {encoder_type!r} is not one of {', '.join(ENCODER_TYPES)}")
        self.encoder_type = encoder_type
        self.embedding = nn.Embedding(num_tokens, hidden_size)
        if encoder_type == "lstm":
            self.lstm = nn.LSTM(hidden_size, hidden_size // 2, num_layers=num_layers, dropout=dropout,
                                bidirectional=True, batch_first=True)
            self.head = nn.Sequential(nn.Linear(2 * (hidden_size // 2), hidden_size), nn.ReLU(),
                                      nn.Linear(hidden_size, hidden_size))
        else:  # num_layers linears with ReLU (and dropout) between them; 2 is NeMo's Linear-ReLU-Linear
            layers: list[nn.Module] = []
            for i in range(max(num_layers, 1)):
                if i:
                    layers += [nn.ReLU(), nn.Dropout(dropout)]
                layers.append(nn.Linear(hidden_size, hidden_size))
            self.head = nn.Sequential(*layers)

    def forward(self) -> torch.Tensor:
        """(num_tokens, hidden) virtual token embeddings."""
        x = self.embedding.weight
        if self.encoder_type == "lstm":
            x = self.lstm(x.unsqueeze(0))[0].squeeze(0)
        return self.head(x)


class PromptTable(nn.Module):
    """Every task's virtual token rows: the frozen rows of earlier tasks, then the rows being learned.

    ``frozen`` (a buffer, (n, h)) holds the tasks of an existing prompt checkpoint; ``add_task``
    appends a task being learned, as a parameter (prompt tuning) or a ``PromptEncoder`` (p-tuning).
    ``rows()`` is the whole table, in the order tasks were added; task ``t`` owns rows
    ``offset(t) .. offset(t) + n_t - 1``.
    """

    def __init__(self, hidden_size: int, frozen: torch.Tensor | None = None) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.register_buffer("frozen", torch.zeros(0, hidden_size) if frozen is None else frozen.detach().clone())
        # "0", "1", ... (task names may clash with ModuleDict's own attributes) → PromptEncoder, or a holder
        # of a "rows" parameter; ``order`` names their tasks
        self.learned = nn.ModuleDict()
        self.order: list[str] = []

    @property
    def num_rows(self) -> int:
        return self.frozen.shape[0] + sum(self._size(name) for name in self.order)

    def _size(self, name: str) -> int:
        module = self.learned[str(self.order.index(name))]
        return module.embedding.num_embeddings if isinstance(module, PromptEncoder) else module.rows.shape[0]

    def add_task(self, name: str, num_tokens: int, *, style: str, encoder_type: str = "lstm", num_layers: int = 2,
                 dropout: float = 0.0, init: torch.Tensor | None = None) -> int:
        """Append a task to learn; return its first row. ``init`` (num_tokens, h): prompt tuning's start rows."""
        if style not in STYLES:
            raise ValueError(f"style {style!r} is not one of {', '.join(STYLES)}")
        offset = self.num_rows
        if style == "p-tuning":
            module: nn.Module = PromptEncoder(num_tokens, self.hidden_size, encoder_type=encoder_type,
                                              num_layers=num_layers, dropout=dropout)
        else:
            module = nn.Module()
            module.rows = nn.Parameter(init.detach().clone().float() if init is not None
                                       else torch.zeros(num_tokens, self.hidden_size))
        self.learned[str(len(self.order))] = module
        self.order.append(name)
        return offset

    def rows(self) -> torch.Tensor:
        """(num_rows, h): the frozen rows, then each learned task's (its encoder's output, for p-tuning)."""
        parts = [self.frozen]
        for i in range(len(self.order)):
            module = self.learned[str(i)]
            parts.append(module() if isinstance(module, PromptEncoder) else module.rows)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    @torch.no_grad()
    def fold(self) -> torch.Tensor:
        """The whole table as plain rows, encoders evaluated in eval mode (no dropout): what a checkpoint keeps."""
        training = self.training
        self.eval()
        try:
            return self.rows().detach().float().clone()
        finally:
            self.train(training)


class PromptedEmbedding(nn.Embedding):
    """The model's token embedding (the same weight ``Parameter``), plus virtual tokens past its vocabulary.

    Ids below ``num_embeddings`` are looked up exactly as ``nn.Embedding`` does; id ``num_embeddings + r``
    is row ``r`` of the prompt table.
    """

    def __init__(self, base: nn.Embedding, table: PromptTable | None = None, rows: torch.Tensor | None = None):
        super().__init__(base.num_embeddings, base.embedding_dim, _weight=base.weight, _freeze=True,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.weight = base.weight  # shared, so the tied output layer and the checkpoint's name stay as they were
        self.table = table  # learning: rows computed per forward (gradients reach the prompts)
        if rows is not None:
            self.register_buffer("rows", rows.to(base.weight.device, base.weight.dtype), persistent=False)
        else:
            self.rows = None

    @property
    def num_input_ids(self) -> int:
        """Ids this embedding accepts: the vocabulary, then one per virtual token."""
        table = self.table.num_rows if self.table is not None else 0
        return self.num_embeddings + (self.rows.shape[0] if self.rows is not None else table)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        virtual = ids >= self.num_embeddings
        if not bool(virtual.any()):
            return F.embedding(ids, self.weight)
        rows = self.table.rows() if self.table is not None else self.rows
        words = F.embedding(ids.masked_fill(virtual, 0), self.weight)
        prompts = F.embedding((ids - self.num_embeddings).clamp(min=0), rows.to(words.dtype))
        return torch.where(virtual.unsqueeze(-1), prompts, words)


def input_embedding_owner(model: nn.Module) -> nn.Module:
    """The module whose ``word_embeddings`` embeds the model's input tokens (GPT's embedding, T5's encoder's)."""
    for name in ("embedding", "encoder_embedding"):
        owner = getattr(model, name, None)
        if owner is not None and getattr(owner, "word_embeddings", None) is not None:
            return owner
    raise ValueError(f"{type(model).__name__} holds no input token embedding (a pipeline part without stage 0?)")


def install_prompts(model: nn.Module, *, table: PromptTable | None = None,
                    rows: torch.Tensor | None = None) -> PromptedEmbedding:
    """Let ``model`` take virtual token ids: learning (``table``, differentiable) or fixed ``rows`` (inference).

    Installing again replaces the prompts; ``remove_prompts`` restores the plain embedding.
    """
    owner = input_embedding_owner(model)
    base = owner.word_embeddings
    if isinstance(base, PromptedEmbedding):
        base = remove_prompts(model)
    prompted = PromptedEmbedding(base, table=table, rows=rows)
    owner.word_embeddings = prompted
    return prompted


def remove_prompts(model: nn.Module) -> nn.Embedding:
    """Put a plain ``nn.Embedding`` (the same weight) back in place of the ``PromptedEmbedding``."""
    owner = input_embedding_owner(model)
    current = owner.word_embeddings
    if isinstance(current, PromptedEmbedding):
        plain = nn.Embedding(current.num_embeddings, current.embedding_dim, _weight=current.weight, _freeze=True,
                             device=current.weight.device, dtype=current.weight.dtype)
        plain.weight = current.weight
        owner.word_embeddings = plain
    return owner.word_embeddings


def num_input_ids(model: nn.Module, vocab_size: int) -> int:
    """How many ids ``model`` takes as input: ``vocab_size``, or more when prompts are installed."""
    try:
        embedding = input_embedding_owner(model).word_embeddings
    except ValueError:
        return vocab_size
    return embedding.num_input_ids if isinstance(embedding, PromptedEmbedding) else vocab_size


def text_init(model: nn.Module, ids: Sequence[int], num_tokens: int) -> torch.Tensor:
    """Prompt tuning's ``text`` init: the embeddings of ``ids`` repeated (or cut) to ``num_tokens`` rows."""
    if not ids:
        raise ValueError("the init text has no tokens")
    weight = input_embedding_owner(model).word_embeddings.weight
    picked = [ids[i % len(ids)] for i in range(num_tokens)]
    return weight.detach()[torch.tensor(picked, device=weight.device)].float().cpu()


# --- the prompt-checkpoint artifact -----------------------------------------------------------------
PROMPTS_FILE = "prompts.safetensors"
PROMPT_CONFIG_FILE = "prompt_config.json"


def tokenizer_fingerprint(manifest) -> str:
    """sha256 over a model-checkpoint's tokenizer: its summary (type, ids, sizes) and its files' hashes."""
    import hashlib
    import json

    summary = dict(manifest.summary.get("tokenizer") or {})
    files = {name: info.get("sha256") for name, info in manifest.files.items() if name.startswith("tokenizer/")}
    text = json.dumps({"summary": summary, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class PromptCheckpoint:
    """A ``prompt-checkpoint`` read back: the folded table, each task's template and rows, and the pinned base."""

    def __init__(self, path, rows: torch.Tensor, tasks: list[dict], manifest) -> None:
        self.path = path
        self.rows = rows  # (num_rows, hidden) float32
        self.tasks = {task["taskname"]: task for task in tasks}  # taskname → template keys + "offset"
        self.manifest = manifest

    @property
    def base(self) -> dict:
        """``{"path", "manifest_sha256", "family", "tokenizer_sha256"}`` of the base the prompts were learned on."""
        return dict(self.manifest.summary.get("base") or {})


def save_prompt_checkpoint(output, *, rows: torch.Tensor, tasks: Sequence[dict], base: dict, producer,
                           config: dict | None = None, inputs: Sequence[dict] = (),
                           extra_files: dict[str, bytes] | None = None) -> None:
    """Write a ``prompt-checkpoint`` at ``output`` atomically (manifest last): ``rows`` and the tasks' templates.

    ``base``: path, manifest_sha256, family and tokenizer_sha256 of the frozen base. ``extra_files``:
    more files to keep in the artifact (a training state to resume from), name → bytes.
    """
    import json
    from pathlib import Path

    import yaml
    from safetensors.torch import save_file

    from bignlp_contracts import PROMPT_CHECKPOINT, atomic_directory, write_manifest

    with atomic_directory(Path(output)) as tmp:
        save_file({"table": rows.detach().float().contiguous().cpu()}, str(tmp / PROMPTS_FILE))
        (tmp / PROMPT_CONFIG_FILE).write_text(json.dumps({"tasks": list(tasks)}, indent=2) + "\n")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config or {}, sort_keys=False))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        files = [PROMPTS_FILE, PROMPT_CONFIG_FILE, "config.yaml", *(extra_files or {})]
        write_manifest(tmp, PROMPT_CHECKPOINT, producer=producer, files=files, config=config or {},
                       inputs=list(inputs),
                       summary={"base": base, "family": base.get("family"), "tasks": [t["taskname"] for t in tasks],
                                "num_virtual_tokens": int(rows.shape[0]), "hidden_size": int(rows.shape[1])})


def load_prompt_checkpoint(path, *, verify: str = "sha256") -> PromptCheckpoint:
    """Read a ``prompt-checkpoint`` (``ArtifactError``, one line, when it is not a complete one)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from bignlp_contracts import PROMPT_CHECKPOINT, read_manifest

    path = Path(path)
    manifest = read_manifest(path, PROMPT_CHECKPOINT, verify=verify)
    rows = load_file(str(path / PROMPTS_FILE))["table"]
    tasks = json.loads((path / PROMPT_CONFIG_FILE).read_text())["tasks"]
    return PromptCheckpoint(path, rows, tasks, manifest)


def base_record(checkpoint) -> dict:
    """How a prompt checkpoint pins its base: path, sha256 of its manifest.json, family, tokenizer fingerprint."""
    from bignlp_contracts import MANIFEST_NAME, read_checkpoint, sha256_file

    path, manifest = read_checkpoint(checkpoint)
    return {"path": str(path.resolve()), "manifest_sha256": sha256_file(path / MANIFEST_NAME),
            "family": manifest.summary.get("family", "gpt"), "tokenizer_sha256": tokenizer_fingerprint(manifest)}


def check_base_pin(pinned: dict, base: dict, *, what: str) -> None:
    """``what``'s prompts were learned on ``base`` (a ``base_record``): same tokenizer, then the same manifest.

    ``ArtifactError`` (one line) otherwise: virtual tokens learned on one model mean nothing to another.
    """
    from bignlp_contracts import ArtifactError

    if pinned.get("tokenizer_sha256") and pinned["tokenizer_sha256"] != base["tokenizer_sha256"]:
        raise ArtifactError(f"{what} was learned with another tokenizer than base {base['path']}'s (tokenizer "
                            f"sha256 {pinned['tokenizer_sha256'][:12]} vs {base['tokenizer_sha256'][:12]})",
                            hint=f"use the base it pins: {pinned.get('path')}")
    if pinned.get("manifest_sha256") != base["manifest_sha256"]:
        raise ArtifactError(f"{what} pins base manifest sha256 {str(pinned.get('manifest_sha256'))[:12]}, but "
                            f"{base['path']}/manifest.json has {base['manifest_sha256'][:12]}: not the base its "
                            f"prompts were learned on", hint=f"use the base it pins: {pinned.get('path')}")
