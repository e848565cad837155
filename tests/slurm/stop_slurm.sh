#!/usr/bin/env bash
# Stop what start_slurm.sh started: cancel jobs left in the queue, then each daemon by
# the PID in its pidfile (only if that PID still runs the expected program), waiting for
# it to exit and killing it if it does not within 10 s.  Prints what it stopped.
set -uo pipefail
export PATH="/usr/sbin:/sbin:$PATH"
base="${SLURM_BASE:-/tmp/bmodesep-slurm}"
export SLURM_CONF="$base/etc/slurm.conf"

stop() {  # program pidfile
  local program="$1" pidfile="$2" pid
  [ -s "$pidfile" ] || return 0
  pid="$(tr -dc 0-9 < "$pidfile")"
  rm -f "$pidfile"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do
    [ -d "/proc/$pid" ] || break
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && break  # exited, not yet reaped
    sleep 0.2
  done
  if [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null
  fi
  echo "stopped $program ($pid)"
}

if [ -s "$base/slurmctld.pid" ] && command -v squeue >/dev/null; then
  jobs="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    sleep 2
  fi
fi
stop slurmd "$base/slurmd.pid"
stop slurmctld "$base/slurmctld.pid"
stop slurmdbd "$base/slurmdbd.pid"
stop mariadbd "$base/db/mariadb.pid"
stop munged "$base/munge/munged.pid"
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$base/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
exit 0
