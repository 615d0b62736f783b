"""Per-cloud defaults: the node-to-node bus bandwidth a healthy pair of nodes reaches, and the
NCCL/UCX environment variables to set for training jobs.

Thresholds are the NeMo launcher's CSP tools defaults (all_reduce bus bandwidth between two
8-GPU nodes). The Azure variables are the seed README's section 4.1.3; the OCI and AWS ones
are the usual starting points for RoCE (OCI BM.GPU4.8) and EFA (p4d) networks: check the HCA
names and GID index against your own nodes (``ibv_devinfo``, ``show_gids``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bignlp_contracts import ConfigError

NDV4_TOPO_PATH = "/opt/microsoft/ndv4-topo.xml"


@dataclass(frozen=True)
class CSP:
    """A cloud's defaults."""

    name: str
    threshold_gbps: float
    env_vars: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


CSPS: dict[str, CSP] = {
    "azure": CSP(
        name="azure",
        threshold_gbps=180.0,
        env_vars={
            "NCCL_TOPO_FILE": NDV4_TOPO_PATH,
            "UCX_IB_PCI_RELAXED_ORDERING": "auto",
            "NCCL_IB_PCI_RELAXED_ORDERING": "2",
            "NCCL_IB_TIMEOUT": "22",
            "NCCL_DEBUG": "INFO",
        },
        notes=(
            f"Write the topology file with: bignlp-csp-validate topology --output {NDV4_TOPO_PATH}",
            "and mount its directory into the container (container_mounts: [/opt/microsoft:/opt/microsoft]).",
        ),
    ),
    "oci": CSP(
        name="oci",
        threshold_gbps=170.0,
        env_vars={
            "NCCL_IB_HCA": "=mlx5_0,mlx5_2,mlx5_6,mlx5_8,mlx5_10,mlx5_12,mlx5_14,mlx5_16",
            "NCCL_IB_GID_INDEX": "3",
            "NCCL_IB_TC": "41",
            "NCCL_IB_SL": "0",
            "NCCL_IB_QPS_PER_CONNECTION": "4",
            "NCCL_IB_TIMEOUT": "22",
            "NCCL_SOCKET_IFNAME": "eth0",
            "UCX_TLS": "tcp",
            "UCX_NET_DEVICES": "eth0",
            "NCCL_DEBUG": "INFO",
        },
        notes=("NCCL_IB_HCA below is an example for BM.GPU4.8: list your nodes' RDMA NICs (`ibv_devinfo -l`).",),
    ),
    "aws": CSP(
        name="aws",
        threshold_gbps=35.0,
        env_vars={
            "FI_PROVIDER": "efa",
            "FI_EFA_USE_DEVICE_RDMA": "1",
            "NCCL_PROTO": "simple",
            "NCCL_DEBUG": "INFO",
        },
        notes=("Needs the aws-ofi-nccl plugin in the container (NCCL over EFA through libfabric).",),
    ),
}


def get_csp(name: str) -> CSP:
    """Look up a CSP by name, with a one-line error listing the known ones."""
    try:
        return CSPS[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown CSP {name!r}; known: {', '.join(CSPS)}",
            hint="pick one, or set --threshold-gbps for another cloud or on-premises cluster",
        ) from None


def render_env(csp: CSP, style: str = "yaml") -> str:
    """The variables as the seed's ``env_vars:`` YAML block, or as shell ``export`` lines."""
    if style == "shell":
        lines = [f"export {k}={_shell_quote(v)}" for k, v in csp.env_vars.items()]
        return "\n".join([*(f"# {n}" for n in csp.notes), *lines]) + "\n"
    lines = [f"# {csp.name}: set in conf/config.yaml (or your sbatch script)", *(f"# {n}" for n in csp.notes)]
    lines.append("env_vars:")
    lines += [f"  {k}: {_yaml_scalar(v)}" for k, v in csp.env_vars.items()]
    return "\n".join(lines) + "\n"


def _shell_quote(value: str) -> str:
    return value if all(c.isalnum() or c in "/._-=," for c in value) else "'" + value.replace("'", "'\\''") + "'"


def _yaml_scalar(value: str) -> str:
    plain = all(c.isalnum() or c in "_/.-" for c in value)  # digits stay bare, as the seed writes them
    return value if plain else f'"{value}"'
