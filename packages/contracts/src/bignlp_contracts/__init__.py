"""Artifact contracts shared by every BigNLP stage.

Stages never import each other; they agree on what is in this package:
artifact kinds and their layouts, ``manifest.json`` (written last, atomically),
strict YAML configs with ``key.sub=value`` overrides, one error hierarchy with
exit codes, and run-environment discovery for multi-process stages.
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
from .errors import ArtifactError, BigNLPError, ConfigError, InputError, RetryableError, exit_on_error
from .kinds import CHECKPOINT_KINDS, GPT_CHECKPOINT, KINDS, MEGATRON_DATASET, MODEL_CHECKPOINT, ArtifactKind, get_kind
from .layout import (
    DatasetRef,
    checkpoint_dir_name,
    checkpoint_family,
    checkpoint_vocab_size,
    dataset_prefix_name,
    latest_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    resolve_dataset,
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

__version__ = "0.3.0"

__all__ = [
    "MANIFEST_NAME", "KINDS", "MEGATRON_DATASET", "MODEL_CHECKPOINT", "GPT_CHECKPOINT", "CHECKPOINT_KINDS",
    "ArtifactKind", "ArtifactError", "BigNLPError", "ConfigError", "DatasetRef", "InputError",
    "Manifest", "Producer", "RetryableError", "RunEnv",
    "apply_overrides", "atomic_directory", "atomic_output_file", "atomic_write_bytes", "atomic_write_text",
    "checkpoint_dir_name", "checkpoint_family", "checkpoint_vocab_size", "dataset_prefix_name", "discover_run_env",
    "dump_config", "exit_on_error",
    "expand_hostlist", "from_dict", "get_kind", "git_commit", "input_record", "latest_checkpoint", "load_config",
    "load_yaml", "parse_override", "read_checkpoint", "read_manifest",
    "remove_abandoned_checkpoint_writes", "remove_manifest", "resolve_dataset",
    "save_config", "set_latest_checkpoint", "sha256_file", "slurm_job_record", "to_dict", "write_manifest",
]
