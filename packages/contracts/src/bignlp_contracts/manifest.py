"""``manifest.json``: the last file an artifact gets, so its presence means "complete".

A manifest records what the artifact is (kind + version), who made it
(package, version, git commit, and the Slurm job when one ran it), from what (input paths with the sha256 of their
manifests or of the raw files), how (the resolved config), what it holds (every
file with size and sha256) and a kind-specific summary.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import ArtifactError
from .kinds import ArtifactKind, get_kind
from .verify import check_files

MANIFEST_NAME = "manifest.json"
_CHUNK = 8 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_commit(start: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout a package runs from, or None outside git.

    ``BIGNLP_GIT_COMMIT`` wins, so container builds without .git can stamp it.
    """
    if env := os.environ.get("BIGNLP_GIT_COMMIT"):
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=start or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class Producer:
    """Who made an artifact. ``slurm``: the job that ran the producer (``slurm_job_record``), if any."""

    package: str
    version: str
    git_commit: str | None = None
    slurm: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``producer`` object; no ``slurm`` key outside a Slurm job."""
        data = {"package": self.package, "version": self.version, "git_commit": self.git_commit}
        if self.slurm is not None:
            data["slurm"] = dict(self.slurm)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Producer:
        """Read a manifest's ``producer``; keys a newer writer added are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def slurm_job_record(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The Slurm job this process runs in, from its SLURM_* variables; None outside Slurm.

    ``job_id`` is this job's own id (for an array task, the task's id); ``array_job_id``
    and ``array_task_id`` are set for array tasks only; ``nodelist`` is the job's nodes.
    """
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    task = env.get("SLURM_ARRAY_TASK_ID")
    return {
        "job_id": job_id,
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID") or None,
        "array_task_id": int(task) if task and task.isdigit() else None,
        "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or None,
    }


@dataclass(frozen=True)
class Manifest:
    """In-memory form of ``manifest.json``."""

    kind: str
    kind_version: int
    producer: Producer
    created_at: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        data = {
            "kind": self.kind,
            "kind_version": self.kind_version,
            "producer": self.producer.to_dict(),
            "created_at": self.created_at,
            "inputs": self.inputs,
            "config": self.config,
            "files": self.files,
            "summary": self.summary,
        }
        return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def describe_files(
    root: str | os.PathLike, relpaths: Iterable[str], *, hashes: Mapping[str, str] | None = None
) -> dict:
    """Size and sha256 of each file under ``root``; precomputed hashes are reused."""
    root = Path(root)
    hashes = hashes or {}
    out = {}
    for rel in sorted(relpaths):
        p = root / rel
        out[rel] = {"size": p.stat().st_size, "sha256": hashes.get(rel) or sha256_file(p)}
    return out


def input_record(path: str | os.PathLike, *, hash_files: bool = True) -> dict[str, Any]:
    """How a manifest names one input: an artifact (by its manifest's hash) or a raw file."""
    path = Path(path)
    record: dict[str, Any] = {"path": str(path.resolve())}
    manifest = _manifest_path_for(path)
    if manifest is not None:
        data = json.loads(manifest.read_text())
        record.update(kind=data.get("kind"), manifest_sha256=sha256_file(manifest))
    elif path.is_file():
        record["size"] = path.stat().st_size
        if hash_files:
            record["sha256"] = sha256_file(path)
    return record


def _manifest_path_for(path: Path) -> Path | None:
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME
    return None


def write_manifest(
    artifact_dir: str | os.PathLike,
    kind: ArtifactKind,
    *,
    producer: Producer,
    files: Iterable[str],
    config: Mapping[str, Any] | None = None,
    inputs: Iterable[Mapping[str, Any]] = (),
    summary: Mapping[str, Any] | None = None,
    hashes: Mapping[str, str] | None = None,
) -> Manifest:
    """Describe ``files`` (relative to ``artifact_dir``) and write the manifest last, atomically.

    Call this only after every other file of the artifact is fully written. Under Slurm the
    producer records the job (``slurm_job_record``) unless the caller already filled ``slurm``.
    """
    artifact_dir = Path(artifact_dir)
    if producer.slurm is None:
        producer = replace(producer, slurm=slurm_job_record())
    manifest = Manifest(
        kind=kind.name,
        kind_version=kind.kind_version,
        producer=producer,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        inputs=[dict(i) for i in inputs],
        config=dict(config or {}),
        files=describe_files(artifact_dir, files, hashes=hashes),
        summary=dict(summary or {}),
    )
    atomic_write_text(artifact_dir / MANIFEST_NAME, manifest.to_json())
    return manifest


def remove_manifest(artifact_dir: str | os.PathLike) -> None:
    """Mark an artifact incomplete before rewriting it in place."""
    try:
        os.unlink(Path(artifact_dir) / MANIFEST_NAME)
    except FileNotFoundError:
        pass


def read_manifest(
    artifact_dir: str | os.PathLike,
    kind: str | ArtifactKind | None = None,
    *,
    verify: str = "size",
) -> Manifest:
    """Read and validate an artifact; raise ArtifactError naming exactly what is wrong.

    ``verify``: ``"none"`` (manifest only), ``"size"`` (every listed file exists
    with its recorded size; the default, cheap) or ``"sha256"`` (also rehash).
    """
    artifact_dir = Path(artifact_dir)
    expected = get_kind(kind) if isinstance(kind, str) else kind
    how = f" Produce it with: {expected.produced_by}" if expected else ""
    what = f"{expected.name} artifact" if expected else "artifact"
    if not artifact_dir.exists():
        raise ArtifactError(f"{artifact_dir}: no such directory (expected a {what}).{how}")
    if not artifact_dir.is_dir():
        raise ArtifactError(f"{artifact_dir}: is a file, expected a {what} directory.{how}")
    mpath = artifact_dir / MANIFEST_NAME
    if not mpath.is_file():
        raise ArtifactError(
            f"{artifact_dir}: not a complete {what}: {MANIFEST_NAME} is missing "
            f"(the producing run did not finish, or this is not an artifact directory).{how}"
        )
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
        manifest = Manifest(
            kind=data["kind"],
            kind_version=int(data["kind_version"]),
            producer=Producer.from_dict(data["producer"]),
            created_at=data["created_at"],
            inputs=data.get("inputs", []),
            config=data.get("config", {}),
            files=data.get("files", {}),
            summary=data.get("summary", {}),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{mpath}: unreadable manifest ({exc.__class__.__name__}: {exc}).{how}") from None
    if expected is not None:
        if manifest.kind != expected.name:
            raise ArtifactError(
                f"{artifact_dir}: is a {manifest.kind!r} artifact, expected {expected.name!r}.{how}"
            )
        if manifest.kind_version != expected.kind_version:
            raise ArtifactError(
                f"{artifact_dir}: {expected.name} kind_version {manifest.kind_version}, this tool reads "
                f"version {expected.kind_version} (made by {manifest.producer.package} "
                f"{manifest.producer.version}); re-create it with a matching version.{how}"
            )
        for rel in expected.required_files:
            if not (artifact_dir / rel).exists():
                raise ArtifactError(f"{artifact_dir}: {expected.name} is missing required file {rel}.{how}")
    if verify != "none":
        _verify_files(artifact_dir, manifest, deep=verify == "sha256")
    return manifest


def _verify_files(artifact_dir: Path, manifest: Manifest, *, deep: bool) -> None:
    # sizes first: a missing or truncated file is reported without hashing the others
    problems = check_files(artifact_dir, manifest.files, sha256=False)
    if not problems and deep:
        problems = check_files(artifact_dir, manifest.files, sha256=True)
    if problems:
        first = problems[0]
        reason = "listed in the manifest is missing" if first.reason == "is missing" else first.reason
        raise ArtifactError(f"{artifact_dir}: file {first.path} {reason}")
