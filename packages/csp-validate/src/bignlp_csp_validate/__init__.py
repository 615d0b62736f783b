"""bignlp-csp-validate: check a GPU cluster before a long training run.

GPU diagnostics on every node (``dcgmi diag`` or ``nvidia-smi``), collective bus
bandwidth over message sizes through ``torch.distributed`` (NCCL on GPUs, gloo on
CPUs) measured and reported as nccl-tests defines it, node-to-node pair tests that
name the nodes below a CSP's bandwidth threshold, the NCCL topology file for Azure
NDv4 and the recommended NCCL/UCX variables per CSP. Library entry points:
:func:`bignlp_csp_validate.worker.validate` (one rank of a validation job),
:func:`bignlp_csp_validate.topology.ndv4_topology_xml` and
:data:`bignlp_csp_validate.csp.CSPS`; ``bignlp-csp-validate`` is the CLI over them.
"""

__version__ = "0.1.0"
