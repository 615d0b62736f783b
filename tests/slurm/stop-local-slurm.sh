#!/bin/bash
# Stop a cluster started by start-local-slurm.sh STATE_DIR: cancel its jobs, then end only the
# daemons whose PID files are under STATE_DIR/run (TERM, bounded wait, then KILL). Never by name.
#
# Usage: stop-local-slurm.sh STATE_DIR
# Environment: LOCAL_SLURM_STOP_TIMEOUT_S  wait for jobs and for each daemon (default 20)
set -uo pipefail

STATE_DIR="${1:?usage: stop-local-slurm.sh STATE_DIR}"
TIMEOUT_S="${LOCAL_SLURM_STOP_TIMEOUT_S:-20}"
log() { echo "stop-local-slurm: $*" >&2; }

[[ -d ${STATE_DIR} ]] || { log "no state dir ${STATE_DIR}; nothing to stop"; exit 0; }
STATE_DIR="$(cd "${STATE_DIR}" && pwd -P)"
RUN="${STATE_DIR}/run"
export SLURM_CONF="${STATE_DIR}/etc/slurm.conf"

owned_pid() {  # owned_pid PIDFILE: print the PID if it is a live process started for this STATE_DIR
  local pid
  [[ -s $1 ]] || return 1
  pid="$(<"$1")"
  [[ ${pid} =~ ^[0-9]+$ && -r /proc/${pid}/cmdline ]] || return 1
  # Guard against a recycled PID: the daemon's command line names a path under STATE_DIR.
  tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF "${STATE_DIR}/" || return 1
  echo "${pid}"
}

# Job processes outlive slurmd (slurmstepd is reparented to init), so cancel and drain first.
if [[ -f ${SLURM_CONF} ]] && owned_pid "${RUN}/slurmctld.pid" >/dev/null; then
  jobs="$(timeout 5 squeue -h -o '%i' 2>/dev/null)"
  if [[ -n ${jobs} ]]; then
    log "cancelling $(wc -w <<<"${jobs}") job(s)"
    # shellcheck disable=SC2086  # one job id per word
    timeout 5 scancel ${jobs} 2>/dev/null
    deadline=$(( SECONDS + TIMEOUT_S ))
    while [[ -n $(timeout 5 squeue -h -o '%i' 2>/dev/null) ]] && (( SECONDS < deadline )); do
      sleep 0.2
    done
  fi
fi

stop_pidfiles() {  # stop_pidfiles PIDFILE...: TERM them all at once (each takes ~2 s), then wait
  local pidfile pid deadline
  local -a pids=()
  for pidfile in "$@"; do
    if pid="$(owned_pid "${pidfile}")"; then
      kill -TERM "${pid}" 2>/dev/null
      pids+=("${pid}")
    fi
  done
  deadline=$(( SECONDS + TIMEOUT_S ))
  for pid in "${pids[@]}"; do
    while [[ -e /proc/${pid} ]] && (( SECONDS < deadline )); do sleep 0.1; done
    if [[ -e /proc/${pid} ]]; then
      log "pid ${pid} ignored TERM for ${TIMEOUT_S} s; sending KILL"
      kill -KILL "${pid}" 2>/dev/null
    fi
  done
  rm -f "$@"
}

# Nodes first, then the controller together with munge (it needs no authentication to save state).
shopt -s nullglob
stop_pidfiles "${RUN}"/slurmd-*.pid
stop_pidfiles "${RUN}/slurmctld.pid" "${RUN}/munged.pid"
log "stopped the daemons of ${STATE_DIR}"
