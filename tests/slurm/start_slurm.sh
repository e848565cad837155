#!/usr/bin/env bash
# A throw-away one-node SLURM cluster for the SLURM test (Debian 12: Slurm 22.05).
# Installs the Debian packages when missing (apt-get; needs root), then starts munged,
# MariaDB + slurmdbd (so that sacct works, as on real clusters), slurmctld and slurmd as
# plain background daemons (no systemd, no cgroups) with all state under $SLURM_BASE,
# and waits until the node is idle.  One fake GPU (GRES on /dev/null) lets jobs that ask
# for --gpus=1 run.  Stop everything with stop_slurm.sh; re-running this script starts
# from scratch.  The configuration lives in $SLURM_BASE/etc (SLURM_CONF); as the SLURM
# plugin's job steps drop SLURM_CONF, /etc/slurm/slurm.conf is linked to it (and the link
# removed by stop_slurm.sh), unless /etc/slurm/slurm.conf is a real cluster's file: then
# this script refuses to run.
#
#   SLURM_BASE=/tmp/bmodesep-slurm   state, logs, pidfiles, database
#   SLURM_DB_PORT=3307               MariaDB port (not 3306: a system MariaDB may own it)
#   SLURM_CPUS=4 x nproc             CPUs of the node: more than the machine has, so that
#                                    short jobs overlap (they mostly wait on start-up)
#   SLURM_MEM_MB=64000               RealMemory of the node (not enforced: no cgroups)
set -euo pipefail
export PATH="/usr/sbin:/sbin:$PATH"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${SLURM_BASE:-/tmp/bmodesep-slurm}"
port="${SLURM_DB_PORT:-3307}"
mem_mb="${SLURM_MEM_MB:-64000}"
cpus="${SLURM_CPUS:-$((4 * $(getconf _NPROCESSORS_ONLN)))}"  # not nproc: it obeys OMP_NUM_THREADS
host="$(hostname -s)"
socket="$base/db/mysqld.sock"
etc="$base/etc"
export SLURM_CONF="$etc/slurm.conf"  # slurmdbd.conf and gres.conf are read from its folder
t0=$SECONDS
say() { echo "[start_slurm +$((SECONDS - t0))s] $*"; }
wait_for() {  # tries command...: poll every 0.2 s
  local tries="$1"; shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# ------------------------------------------------------------------ packages
need=(munged slurmctld slurmd slurmdbd sinfo sacct mariadbd mariadb-install-db)
installed() { for b in "${need[@]}"; do command -v "$b" >/dev/null || return 1; done; }
if ! installed; then
  [ "$(id -u)" = 0 ] || { echo "SLURM is not installed and only root can install it" >&2; exit 1; }
  say "installing munge, slurm-wlm daemons and mariadb (apt-get)"
  # policy-rc.d 101: the packages' init scripts must not start system-wide daemons
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends \
    munge slurmctld slurmd slurmdbd slurm-client mariadb-server >/dev/null
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# ----------------------------------------------------------- fresh state
"$here/stop_slurm.sh" >/dev/null 2>&1 || true
rm -rf "$base"
mkdir -p "$base"/{etc,state,spool,log,munge,db,data,dev}
chmod 755 "$base"
ln -s /dev/null "$base/dev/gpu0"

cat > "$etc/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=$base/dev/gpu0
CONF
cat > "$etc/slurm.conf" <<CONF
# written by bmodesep tests/slurm/start_slurm.sh
ClusterName=bmodesep
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$base/state
SlurmdSpoolDir=$base/spool
SlurmctldPidFile=$base/slurmctld.pid
SlurmdPidFile=$base/slurmd.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmdLogFile=$base/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
# the node may promise more CPUs and memory than the machine has (SLURM_CPUS)
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# srun inside the jobs reads /etc/slurm/slurm.conf (the plugin drops SLURM_CONF)
system_conf=/etc/slurm/slurm.conf
if [ -e "$system_conf" ] && ! grep -q "^# written by bmodesep tests/slurm" "$system_conf"; then
  echo "$system_conf belongs to another SLURM installation: not touching it" >&2
  exit 1
fi
mkdir -p /etc/slurm
ln -sfn "$etc/slurm.conf" "$system_conf"

# ------------------------------------------------------------------ munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey -c -f -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge "$base/munge"
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged is already running (not ours): using it"
else
  runuser -u munge -- munged --force --pid-file="$base/munge/munged.pid" \
    --log-file="$base/munge/munged.log" --seed-file="$base/munge/munged.seed"
  wait_for 50 sh -c 'munge -n | unmunge'
  say "munged up"
fi

# -------------------------------------------------------- mariadb, slurmdbd
chown mysql:mysql "$base/db" "$base/data"
mariadb-install-db --no-defaults --user=mysql --datadir="$base/data" \
  --auth-root-authentication-method=socket --skip-test-db >"$base/log/mariadb-install.log" 2>&1
# setsid and no inherited descriptors: the daemon must not hold the caller's pipes open
setsid mariadbd --no-defaults --user=mysql --datadir="$base/data" --socket="$socket" \
  --pid-file="$base/db/mariadb.pid" --bind-address=127.0.0.1 --port="$port" \
  --log-error="$base/log/mariadb.err" --innodb-buffer-pool-size=64M \
  </dev/null >/dev/null 2>&1 &
wait_for 150 mariadb-admin --socket="$socket" ping
mariadb --socket="$socket" -e "
  CREATE USER 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
say "mariadb up"
cat > "$etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile=$base/log/slurmdbd.log
PidFile=$base/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$etc/slurmdbd.conf"
slurmdbd
wait_for 100 sacctmgr -n list cluster
say "slurmdbd up"

# ------------------------------------------------------- slurmctld, slurmd
slurmctld
wait_for 100 sh -c 'scontrol ping | grep -q UP'
slurmd
state=""
for _ in $(seq 150); do
  state="$(sinfo -h -n "$host" -o %T 2>/dev/null || true)"
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  echo "node $host is '$state', not idle; logs in $base/log" >&2
  tail -n 20 "$base/log/slurmctld.log" "$base/log/slurmd.log" >&2 || true
  exit 1
fi
# slurmctld registers the cluster with slurmdbd; sacct answers once it has
wait_for 50 sh -c 'sacctmgr -n -P list cluster format=cluster | grep -qx bmodesep'
say "SLURM ready: $(sinfo -h -o '%P %a %D %T %N %G' | tr '\n' ' ')"
