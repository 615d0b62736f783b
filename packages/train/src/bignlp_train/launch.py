"""``--nproc-per-node N``: the local launcher, shared by the stages (``bignlp_contracts.launch``)."""

from bignlp_contracts.launch import FORWARDED_SIGNALS, RETRYABLE, free_port, launch_local, worker_env

__all__ = ["FORWARDED_SIGNALS", "RETRYABLE", "free_port", "launch_local", "worker_env"]
