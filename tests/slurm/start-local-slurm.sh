#!/bin/bash
# Start a private Slurm cluster of emulated nodes on 127.0.0.1 for tests (root, Debian-like).
#
# Usage: start-local-slurm.sh STATE_DIR
#   Installs slurmctld/slurmd/slurm-client/munge from the distribution if missing, writes a
#   private munge key and slurm.conf under STATE_DIR, starts munged, slurmctld and one
#   `slurmd -N nX` per node, waits until every node is idle, then prints on stdout the
#   environment a client needs (eval it). Every daemon's PID file is under STATE_DIR/run, so
#   stop-local-slurm.sh STATE_DIR ends exactly these daemons. Re-running while up is a no-op.
#
# Environment:
#   LOCAL_SLURM_NODES      emulated nodes n1..nN (default 2)
#   LOCAL_SLURM_CPUS       CPUs per node (default 1: 2 nodes x 1 CPU fits a 2-core machine)
#   LOCAL_SLURM_PORT       slurmctld port; slurmd of node i uses PORT+i (default 6817)
#   LOCAL_SLURM_TIMEOUT_S  how long to wait for idle nodes (default 60)
#
# Facts behind each setting: ../shared/SLURM-NOTES.md (gotchas numbered there).
set -euo pipefail

STATE_DIR="${1:?usage: start-local-slurm.sh STATE_DIR}"
NUM_NODES="${LOCAL_SLURM_NODES:-2}"
NUM_CPUS="${LOCAL_SLURM_CPUS:-1}"
CTLD_PORT="${LOCAL_SLURM_PORT:-6817}"
TIMEOUT_S="${LOCAL_SLURM_TIMEOUT_S:-60}"

log() { echo "start-local-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as SlurmUser=root)"
[[ ${NUM_NODES} =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_NODES must be a positive integer, got '${NUM_NODES}'"
[[ ${NUM_CPUS} =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_CPUS must be a positive integer, got '${NUM_CPUS}'"
[[ ${CTLD_PORT} =~ ^[0-9]+$ ]] && (( CTLD_PORT > 0 && CTLD_PORT + NUM_NODES < 65536 )) \
  || die "LOCAL_SLURM_PORT must be a port number, got '${CTLD_PORT}'"

mkdir -p "${STATE_DIR}"
STATE_DIR="$(cd "${STATE_DIR}" && pwd -P)"
CONF="${STATE_DIR}/etc/slurm.conf"
RUN="${STATE_DIR}/run"
MUNGE_DIR="${STATE_DIR}/munge"
MUNGE_SOCKET="${MUNGE_DIR}/munge.socket.2"

print_env() {
  echo "export SLURM_CONF=${CONF}"
}

pid_alive() {  # pid_alive PIDFILE: the PID in it is a live process started for this STATE_DIR
  local pid
  [[ -s $1 ]] || return 1
  pid="$(<"$1")"
  [[ ${pid} =~ ^[0-9]+$ && -r /proc/${pid}/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF "${STATE_DIR}/"
}

nodes_idle() {
  local states
  states="$(SLURM_CONF="${CONF}" timeout 5 sinfo -h -N -o '%t' 2>/dev/null)" || return 1
  [[ $(grep -c '^idle$' <<<"${states}") -eq ${NUM_NODES} ]]
}

# --- already running? -------------------------------------------------------------------------
if [[ -f ${CONF} ]] && pid_alive "${RUN}/munged.pid" && pid_alive "${RUN}/slurmctld.pid"; then
  all_up=1
  for i in $(seq 1 "${NUM_NODES}"); do pid_alive "${RUN}/slurmd-n${i}.pid" || all_up=0; done
  if (( all_up )) && nodes_idle; then
    log "already running under ${STATE_DIR}"
    print_env
    exit 0
  fi
fi

# --- packages -----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm is not installed and there is no apt-get to install it"
  log "installing slurmctld slurmd slurm-client munge"
  # No systemd here: a policy-rc.d that denies (exit 101) keeps the packages' postinst from
  # starting system-wide daemons (gotcha 1). Only add one if the image has none, and remove it after.
  added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  trap '(( added_policy )) && rm -f /usr/sbin/policy-rc.d' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
    || { apt-get update >&2 && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >&2; } \
    || die "apt-get install of slurm failed"
  if (( added_policy )); then rm -f /usr/sbin/policy-rc.d; fi
  trap - EXIT
fi

# --- state dir, munge ---------------------------------------------------------------------------
mkdir -p "${STATE_DIR}/etc" "${RUN}" "${STATE_DIR}/log" "${STATE_DIR}/spool/ctld" "${MUNGE_DIR}"
chmod 755 "${STATE_DIR}" "${MUNGE_DIR}"  # munged warns "Socket is inaccessible" otherwise (gotcha 3)
if [[ ! -s ${MUNGE_DIR}/munge.key ]]; then
  dd if=/dev/urandom of="${MUNGE_DIR}/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "${MUNGE_DIR}/munge.key"

# --- /etc/hosts: n1..nN must resolve (MASTER_ADDR=n1 in templates) ------------------------------
for i in $(seq 1 "${NUM_NODES}"); do
  if ! awk -v n="n${i}" '$1 == "127.0.0.1" { for (f = 2; f <= NF; f++) if ($f == n) found = 1 } END { exit !found }' /etc/hosts; then
    # This image's /etc/hosts has no final newline (gotcha 8).
    [[ -s /etc/hosts && $(tail -c1 /etc/hosts | od -An -c | tr -d ' ') != '\n' ]] && echo >>/etc/hosts
    echo "127.0.0.1 n${i}" >>/etc/hosts
  fi
done

# --- slurm.conf -----------------------------------------------------------------------------------
host="$(hostname -s)"  # SlurmctldHost must be the real short hostname (gotcha 4)
mem_kb="$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
real_mem_mb=$(( mem_kb * 9 / 10 / 1024 / NUM_NODES ))
node_lines=""
node_names=""
for i in $(seq 1 "${NUM_NODES}"); do
  node_lines+="NodeName=n${i} NodeHostname=${host} NodeAddr=127.0.0.1 Port=$(( CTLD_PORT + i )) CPUs=${NUM_CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket=${NUM_CPUS} ThreadsPerCore=1 RealMemory=${real_mem_mb} State=UNKNOWN"$'\n'
  node_names+="${node_names:+,}n${i}"
done
cat >"${CONF}.tmp" <<CONF
# Written by tests/slurm/start-local-slurm.sh; see ../shared/SLURM-NOTES.md.
ClusterName=local$(printf '%s' "${CTLD_PORT}")
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=$(( CTLD_PORT + 1 ))
# Bind to the configured addresses (127.0.0.1), not to every interface.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s): slurmd
# refuses to relaunch a job id whose credential it revoked less than that ago ("Job credential revoked").
AuthInfo=socket=${MUNGE_SOCKET},cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${STATE_DIR}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# A job whose dependency can never be satisfied is cancelled instead of pending forever.
# (Since 20.11 this lives in DependencyParameters; under SchedulerParameters 22.05 ignores it.)
DependencyParameters=kill_invalid_depend
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=86400
KillWait=5
InactiveLimit=0
Waittime=0
StateSaveLocation=${STATE_DIR}/spool/ctld
SlurmdSpoolDir=${STATE_DIR}/spool/slurmd-%n
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd-%n.pid
SlurmctldLogFile=${STATE_DIR}/log/slurmctld.log
SlurmdLogFile=${STATE_DIR}/log/slurmd-%n.log
${node_lines}PartitionName=debug Nodes=${node_names} Default=YES MaxTime=INFINITE State=UP
CONF
mv "${CONF}.tmp" "${CONF}"
# slurmd 22.05 rejects CgroupPlugin=disabled; autodetect loads a plugin that stays unused (gotcha 2).
echo "CgroupPlugin=autodetect" >"${STATE_DIR}/etc/cgroup.conf"
export SLURM_CONF="${CONF}"

# --- daemons (each forks into the background and writes its PID file) ---------------------------
if ! pid_alive "${RUN}/munged.pid"; then
  munged --socket="${MUNGE_SOCKET}" --key-file="${MUNGE_DIR}/munge.key" \
    --pid-file="${RUN}/munged.pid" --log-file="${STATE_DIR}/log/munged.log" \
    --seed-file="${MUNGE_DIR}/munged.seed" \
    || die "munged failed to start; see ${STATE_DIR}/log/munged.log"
fi
if pid_alive "${RUN}/slurmctld.pid"; then
  scontrol reconfigure >&2 || true
else
  slurmctld -f "${CONF}" || die "slurmctld failed to start; see ${STATE_DIR}/log/slurmctld.log"
fi
for i in $(seq 1 "${NUM_NODES}"); do
  pid_alive "${RUN}/slurmd-n${i}.pid" && continue
  mkdir -p "${STATE_DIR}/spool/slurmd-n${i}"
  slurmd -f "${CONF}" -N "n${i}" || die "slurmd -N n${i} failed to start; see ${STATE_DIR}/log/slurmd-n${i}.log"
done

# --- wait until every node is idle ---------------------------------------------------------------
deadline=$(( SECONDS + TIMEOUT_S ))
until nodes_idle; do
  if (( SECONDS >= deadline )); then
    SLURM_CONF="${CONF}" sinfo -N >&2 || true
    die "nodes not idle after ${TIMEOUT_S} s; logs in ${STATE_DIR}/log"
  fi
  sleep 0.2
done
log "${NUM_NODES} node(s) idle under ${STATE_DIR} (slurmctld port ${CTLD_PORT})"
print_env
