"""Artifact contracts shared by every BigNLP stage.

Stages never import each other; they agree on what is in this package:
artifact kinds and their layouts, ``manifest.json`` (written last, atomically),
strict YAML configs with ``key.sub=value`` overrides, one error hierarchy with
exit codes, run-environment discovery for multi-process stages, one writer per run
directory (``lock_run_dir``) and checking files against their manifest (``check_files``).
"""

from .atomic import atomic_directory, atomic_output_file, atomic_write_bytes, atomic_write_text
from .config import (
    apply_overrides,
    dump_config,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    save_config,
    to_dict,
)
from .download import content_length, download, fetch_sha256sums, file_lock, is_url, parse_sha256sums
from .durations import format_duration
from .errors import ArtifactError, BigNLPError, ConfigError, InputError, RetryableError, exit_on_error
from .kinds import (
    CHECKPOINT_KINDS,
    EVALUATION,
    GPT_CHECKPOINT,
    HF_MODEL,
    KINDS,
    MEGATRON_DATASET,
    MODEL_CHECKPOINT,
    NEMO_ARCHIVE,
    PROMPT_CHECKPOINT,
    TASK_DATA,
    TRITON_REPOSITORY,
    ArtifactKind,
    get_kind,
)
from .layout import (
    DatasetRef,
    checkpoint_dir_name,
    checkpoint_family,
    checkpoint_problem,
    checkpoint_vocab_size,
    dataset_prefix_name,
    latest_checkpoint,
    move_aside_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    resolve_checkpoint,
    resolve_dataset,
    resume_candidates,
    set_latest_checkpoint,
)
from .manifest import (
    MANIFEST_NAME,
    Manifest,
    Producer,
    git_commit,
    input_record,
    read_manifest,
    remove_manifest,
    sha256_file,
    slurm_job_record,
    write_manifest,
)
from .runenv import RunEnv, discover_run_env, expand_hostlist
from .runlock import LockHolder, RunDirBusyError, RunLock, lock_run_dir, probe_run_lock, read_lock_holder
from .verify import FileProblem, check_files, share_files

__version__ = "0.9.0"

__all__ = [
    "MANIFEST_NAME", "KINDS", "MEGATRON_DATASET", "MODEL_CHECKPOINT", "GPT_CHECKPOINT", "CHECKPOINT_KINDS",
    "NEMO_ARCHIVE", "HF_MODEL", "EVALUATION", "PROMPT_CHECKPOINT", "TASK_DATA", "TRITON_REPOSITORY",
    "ArtifactKind", "ArtifactError", "BigNLPError", "ConfigError", "DatasetRef", "FileProblem", "InputError",
    "LockHolder", "Manifest", "Producer", "RetryableError", "RunDirBusyError", "RunEnv", "RunLock",
    "apply_overrides", "atomic_directory", "atomic_output_file", "atomic_write_bytes", "atomic_write_text",
    "check_files", "content_length", "download", "fetch_sha256sums", "file_lock", "is_url", "parse_sha256sums",
    "checkpoint_dir_name", "checkpoint_family", "checkpoint_problem", "checkpoint_vocab_size",
    "dataset_prefix_name", "discover_run_env",
    "dump_config", "exit_on_error", "format_duration",
    "expand_hostlist", "from_dict", "get_kind", "git_commit", "input_record", "latest_checkpoint", "load_config",
    "load_yaml", "lock_run_dir", "move_aside_checkpoint", "parse_override", "probe_run_lock", "read_checkpoint",
    "read_lock_holder", "read_manifest", "remove_abandoned_checkpoint_writes", "remove_manifest", "resolve_checkpoint",
    "resolve_dataset",
    "resume_candidates", "save_config", "set_latest_checkpoint", "sha256_file", "share_files", "slurm_job_record",
    "to_dict", "write_manifest",
]
