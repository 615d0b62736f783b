"""``bignlp-dataprep run``: a recipe's items through download → extract → (tokenizer) → preprocess, then finalize.

download, extract and preprocess work item by item on this process's shard
(``shard_of(items, rank, world_size)``) and leave a completion marker per item and
step; each skips items whose marker exists, so any re-run (requeued array task,
re-run after kill -9) finishes only what is missing and yields the same bytes.
One process runs an item's steps back to back, so intermediates are deleted
early (``rm_downloaded``/``rm_extracted``, only after the next step's marker is
written). ``finalize`` runs once, after every shard: it checks every item's
marker and writes the tokenizer copies, ``config.yaml`` and the one
``manifest.json`` of the ``data_dir`` dataset artifact. The ``tokenizer`` step is
not per item: it trains the recipe's SentencePiece model once (``recipe_tokenizer.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bignlp_contracts import (
    MEGATRON_DATASET,
    ArtifactError,
    ConfigError,
    InputError,
    Manifest,
    read_manifest,
    remove_manifest,
    save_config,
    to_dict,
    write_manifest,
)
from bignlp_contracts.download import fetch_sha256sums
from bignlp_contracts.manifest import MANIFEST_NAME, sha256_file
from bignlp_tokenizers import Tokenizer, TokenizerSpec, build_tokenizer

from .encode import SKIP_REASONS
from .extract import extract
from .preprocess import CONFIG_NAME, copy_tokenizer_files, file_mode, producer, tokenizer_summary, write_pairs
from .readers import InputFile
from .recipe_tokenizer import download_options, ensure_tokenizer, fetch_item, needs_training, train_recipe_tokenizer
from .recipes import Item, Recipe
from .shards import read_marker, remove_stale_temporaries, shard_of, write_marker

STEPS = ("download", "extract", "tokenizer", "preprocess", "finalize")
ITEM_STEPS = ("download", "extract", "preprocess")


def parse_steps(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of steps (``download,extract,preprocess``), in pipeline order."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return STEPS
    bad = [s for s in names if s not in STEPS]
    if bad or not names:
        raise ConfigError(f"--step {text!r}: unknown step {', '.join(bad) or '(none)'}",
                          hint=f"use all or a comma list of {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in names)


@dataclass
class RunReport:
    """What a run did, for the CLI to print."""

    items: list[str] = field(default_factory=list)  # this shard's item ids
    done: dict[str, list[str]] = field(default_factory=dict)  # step → items processed now
    skipped: dict[str, list[str]] = field(default_factory=dict)  # step → items already done
    manifest: Manifest | None = None


def run_recipe(
    cfg: Recipe,
    *,
    steps: Sequence[str] = STEPS,
    rank: int = 0,
    world_size: int = 1,
    config_name: str = "CONFIG",
    progress: bool = False,
    echo: Callable[[str], None] = lambda _msg: None,
) -> RunReport:
    """Run ``steps`` of recipe ``cfg`` for shard ``rank`` of ``world_size``; finalize covers every item.

    ``config_name`` only goes into error hints (the command that produces a missing item).
    """
    items = cfg.items()
    sizes = [i.size for i in items]
    mine = shard_of(items, rank, world_size, sizes=None if None in sizes else sizes)  # type: ignore[arg-type]
    report = RunReport(items=[i.id for i in mine])
    ctx = _Context(cfg, _checksums(cfg), progress, echo)
    if "tokenizer" in steps and needs_training(cfg):
        # before the items: it fetches what it trains on; other shares wait on its lock (or find its marker)
        trained = train_recipe_tokenizer(cfg, ctx.sums, progress=progress)
        (report.done if trained else report.skipped).setdefault("tokenizer", []).append("model")
    for item in mine:
        for step in (s for s in ITEM_STEPS if s in steps):
            if step == "preprocess" and not cfg.preprocess_data:
                continue
            marker = read_marker(cfg.root, step, item.id)
            if step == "preprocess" and marker is not None and marker.get("settings") != ctx.settings(item):
                echo(f"preprocess {item.id}: done before with other settings (output_name, json_keys, append_eod, "
                     "on_error, split_sentences or tokenizer); redoing it")
                marker = None
            if marker is not None or not _applies(step, item):
                report.skipped.setdefault(step, []).append(item.id)
                _remove_intermediates(cfg, item, step)  # a run killed after the marker, before the deletion
                continue
            echo(f"{step} {item.id}: {item.source}")
            _STEP_FUNCS[step](ctx, item)
            _remove_intermediates(cfg, item, step)
            report.done.setdefault(step, []).append(item.id)
    if "finalize" in steps and cfg.preprocess_data:
        report.manifest = finalize(cfg, config_name=config_name)
    return report


@dataclass
class _Context:
    """What the item steps of one run share; the tokenizer is built once, when first needed."""

    cfg: Recipe
    sums: dict[str, str]
    progress: bool
    echo: Callable[[str], None] = lambda _msg: None
    _spec: TokenizerSpec | None = None
    _tokenizer: Tokenizer | None = None

    @property
    def spec(self) -> TokenizerSpec:
        if self._spec is None:
            self._spec = ensure_tokenizer(self.cfg, self.sums, progress=self.progress)
        return self._spec

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.spec)
        return self._tokenizer

    def settings(self, item: Item) -> dict:
        return preprocess_settings(self.cfg, self.spec, item)


def preprocess_settings(cfg: Recipe, spec: TokenizerSpec, item: Item) -> dict:
    """What an item's pair depends on besides its text; a marker with other settings is stale."""
    return {
        "pairs": item_names(cfg, item), "json_keys": list(cfg.json_keys), "append_eod": cfg.append_eod,
        "tokenizer_type": spec.type, "eod_token": spec.eod_token, "on_error": cfg.on_error,
        "tokenizer_sha256": [sha256_file(p) for p in spec.paths()],
        # only when on: markers written before the key existed are unsplit, and stay valid for unsplit runs
        **({"split_sentences": True} if cfg.split_sentences else {}),
    }


def _applies(step: str, item: Item) -> bool:
    files = item.files()
    return {"download": any(f.download is not None for f in files),
            "extract": any(f.extract is not None for f in files)}.get(step, True)


def _checksums(cfg: Recipe) -> dict[str, str]:
    if not cfg.sha256sums_url:
        return {}
    return fetch_sha256sums(cfg.sha256sums_url, cfg.root, **download_options(cfg, progress=False))


def _download(ctx: _Context, item: Item) -> None:
    for part in item.files():  # a split's files each get their own marker too: a re-run resumes mid-split
        if part.download is not None and (part is item or read_marker(ctx.cfg.root, "download", part.id) is None):
            expected = _expected_sha(ctx.sums, part.download.name, required=bool(ctx.sums))
            fetch_item(ctx.cfg, part, expected, progress=ctx.progress)
    if item.parts:
        write_marker(ctx.cfg.root, "download", item.id, {"parts": [p.id for p in item.parts]})


def _extract(ctx: _Context, item: Item) -> None:
    cfg = ctx.cfg
    assert item.extract is not None
    src = item.download or Path(item.source)
    if item.download is not None and read_marker(cfg.root, "download", item.id) is None:
        raise ArtifactError(f"item {item.id}: {item.download.name} is not downloaded yet",
                            hint="run the download step first (--step download,extract)")
    remove_stale_temporaries(item.extract)
    size = extract(src, item.extract)
    write_marker(cfg.root, "extract", item.id, {"source": str(src), "file": str(item.extract), "size": size})


def _preprocess(ctx: _Context, item: Item) -> None:
    cfg = ctx.cfg
    first = item.files()[0]
    needed = "extract" if first.extract is not None else "download" if first.download is not None else None
    if needed and read_marker(cfg.root, needed, item.id) is None:
        raise ArtifactError(f"item {item.id}: {first.input.name} is not {needed}ed yet",
                            hint=f"run the {needed} step first (--step download,extract,preprocess)")
    for part in item.files():
        if not part.input.is_file():
            raise ArtifactError(
                f"item {item.id}: {part.input} is gone (deleted by rm_downloaded/rm_extracted?) but must be "
                "preprocessed again",
                hint=f"delete {cfg.root}/.bignlp-done/*/{item.id}.json and run the same command again",
            )
    tokenizer = ctx.tokenizer
    names = item_names(cfg, item)
    for name in names:
        for ext in (".bin", ".idx"):
            remove_stale_temporaries(cfg.root / f"{name}{ext}")
    start = time.perf_counter()
    pairs = write_pairs([InputFile(p.input) for p in item.files()], tokenizer, cfg.root, names, json_keys=cfg.json_keys,
                        append_eod=cfg.append_eod, workers=cfg.workers, progress=ctx.progress,
                        on_error=cfg.on_error, split_sentences=cfg.split_sentences)
    files = {}
    for name in names:
        for ext in (".bin", ".idx"):
            path = cfg.root / f"{name}{ext}"
            files[path.name] = {"size": path.stat().st_size}
    for rel, digest in pairs.bin_sha256.items():
        files[rel]["sha256"] = digest
    write_marker(cfg.root, "preprocess", item.id, {
        "source": item.source, "datasets": pairs.datasets, "files": files, "num_documents": pairs.num_documents,
        "input_bytes": pairs.input_bytes, "inputs": pairs.inputs, "elapsed_s": round(time.perf_counter() - start, 3),
        "settings": ctx.settings(item), "skipped": pairs.skipped,
    })
    if any(pairs.skipped.values()):
        ctx.echo(f"preprocess {item.id}: skipped " + ", ".join(f"{k} {n:,}" for k, n in pairs.skipped.items() if n))


_STEP_FUNCS = {"download": _download, "extract": _extract, "preprocess": _preprocess}


def _remove_intermediates(cfg: Recipe, item: Item, step: str) -> None:
    """Delete what the step just consumed, once its marker is written."""
    if read_marker(cfg.root, step, item.id) is None:
        return
    for part in item.files():
        consumer_of_download = "extract" if part.extract is not None else "preprocess"
        if step == consumer_of_download and cfg.rm_downloaded and part.download is not None:
            part.download.unlink(missing_ok=True)
        if step == "preprocess" and getattr(cfg, "rm_extracted", False) and part.extract is not None:
            part.extract.unlink(missing_ok=True)


def _expected_sha(sums: dict[str, str], name: str, *, required: bool) -> str | None:
    if name in sums:
        return sums[name]
    if required:
        raise InputError(f"checksum list has no entry for {name}", hint="add it, or set sha256sums_url=null")
    return None


def item_names(cfg: Recipe, item: Item) -> list[str]:
    """The pair prefixes of one item, one per JSON key (``NAME_NN_text_document``)."""
    return [f"{item.prefix}_{key}_document" for key in cfg.json_keys]


def finalize(cfg: Recipe, *, config_name: str = "CONFIG") -> Manifest:
    """Check every item's preprocess marker and pair, then write the artifact's manifest (last)."""
    items = cfg.items()
    spec = ensure_tokenizer(cfg, train=False)
    markers = {i.id: read_marker(cfg.root, "preprocess", i.id) for i in items}
    missing = [i.id for i in items if (markers[i.id] or {}).get("settings") != preprocess_settings(cfg, spec, i)]
    if missing:
        select = ""
        if isinstance(getattr(cfg, "file_numbers", None), str):
            select = " file_numbers=" + ",".join(str(int(i)) for i in missing)
        raise ArtifactError(
            f"{cfg.root}: cannot finalize: item(s) {', '.join(missing)} of {len(items)} are not preprocessed "
            "(or were, with other settings)",
            hint=f"run bignlp-dataprep run --config {config_name} --step download,extract,preprocess "
                 f"with the same overrides{select}, then --step finalize again",
        )
    _check_existing(cfg.root)
    files: dict[str, dict] = {}
    for item in items:
        for rel, meta in markers[item.id]["files"].items():
            size = (cfg.root / rel).stat().st_size if (cfg.root / rel).is_file() else None
            if size != meta["size"]:
                raise ArtifactError(
                    f"{cfg.root}: {rel} of item {item.id} is {'missing' if size is None else f'{size} bytes'}, "
                    f"its completion marker says {meta['size']} bytes",
                    hint=f"delete {cfg.root}/.bignlp-done/preprocess/{item.id}.json and run the preprocess step again",
                )
            files[rel] = meta
    remove_manifest(cfg.root)
    tokenizer: Tokenizer = build_tokenizer(spec)
    tok_files = copy_tokenizer_files(tokenizer, cfg.root)
    save_config(cfg, cfg.root / CONFIG_NAME)
    (cfg.root / CONFIG_NAME).chmod(file_mode())
    datasets = [d for item in items for d in markers[item.id]["datasets"]]
    input_bytes = sum(m["input_bytes"] for m in markers.values())
    elapsed = sum(m["elapsed_s"] for m in markers.values())
    summary = {
        "datasets": datasets,
        "tokenizer": tokenizer_summary(tokenizer, tok_files),
        "num_documents": sum(m["num_documents"] for m in markers.values()),
        "num_tokens": sum(d["num_tokens"] for d in datasets),
        "input_bytes": input_bytes,
        "skipped": {r: sum(m.get("skipped", {}).get(r, 0) for m in markers.values()) for r in SKIP_REASONS},
        "split_sentences": cfg.split_sentences,  # every marker's settings say the same (checked above)
        "elapsed_s": round(elapsed, 3),  # preprocessing time summed over items
        "mb_per_s": round(input_bytes / 1e6 / max(elapsed, 1e-9), 3),
    }
    # each input names the job that preprocessed it (an array task), when that ran under Slurm
    inputs = [{"item": item.id, "source": item.source, **rec,
               **({"slurm": markers[item.id]["slurm"]} if markers[item.id].get("slurm") else {})}
              for item in items for rec in markers[item.id]["inputs"]]
    hashes = {rel: meta["sha256"] for rel, meta in files.items() if "sha256" in meta}
    manifest = write_manifest(
        cfg.root, MEGATRON_DATASET, producer=producer(), files=[*files, *tok_files.values(), CONFIG_NAME],
        config=to_dict(cfg), inputs=inputs, summary=summary, hashes=hashes,
    )
    (cfg.root / MANIFEST_NAME).chmod(file_mode())
    return manifest


def _check_existing(root: Path) -> None:
    """A previous finalize of this recipe may be replaced; another kind of artifact may not."""
    if not (root / MANIFEST_NAME).is_file():
        return
    try:
        kind = read_manifest(root, verify="none").kind
    except ArtifactError:
        return  # unreadable: ours to rewrite
    if kind != MEGATRON_DATASET.name:
        raise ArtifactError(f"{root} already holds a {kind!r} artifact", hint="choose another data_dir")
