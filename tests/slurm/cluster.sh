#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (root), for tests/test_slurm.py.
#
#   cluster.sh start STATE_DIR   install the Debian packages if absent, save /etc/slurm and
#                                /etc/munge, start munged (unless running), slurmctld, slurmd
#   cluster.sh stop STATE_DIR    stop exactly the daemons `start` started (by PID) and put
#                                /etc/slurm and /etc/munge back as they were; says what it did
set -euo pipefail
action="$1"
state="$2"
saved="$state/etc-before.tar"   # /etc/slurm and /etc/munge as found (absent ones not in it)
pids="$state/started.pids"      # "name pid" per daemon this script started

stop() {
  [[ -f "$pids" ]] || { echo "cluster.sh: nothing was started from $state"; return 0; }
  while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "cluster.sh: stopped $name (pid $pid)"
    fi
  done < "$pids"
  rm -f "$pids"
  if [[ -f "$saved" ]]; then
    rm -rf /etc/slurm /etc/munge
    tar -C / -xpf "$saved"
    rm -f "$saved"
    echo "cluster.sh: restored /etc/slurm and /etc/munge as they were before the test"
  fi
}

start() {
  mkdir -p "$state"/{spool,ctld,log}
  if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "cluster.sh: a SLURM daemon is already running on this machine; stop it first" >&2
    exit 1
  fi
  local existing=()
  for d in etc/slurm etc/munge; do [[ -e "/$d" ]] && existing+=("$d"); done
  tar -C / -cpf "$saved" --files-from /dev/null ${existing[@]+"${existing[@]}"}
  : > "$pids"
  if ! command -v slurmctld >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
  fi
  mkdir -p /run/munge /var/log/munge /etc/munge
  [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown -R munge:munge /etc/munge /run/munge /var/log/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  if ! pgrep -x munged >/dev/null; then
    munged --force --pid-file="$state/munged.pid"
    echo "munged $(cat "$state/munged.pid")" >> "$pids"
  fi
  local host conf
  host=$(hostname -s)
  conf=/etc/slurm/slurm.conf
  mkdir -p /etc/slurm
  cat > "$conf" <<CONF
ClusterName=gicl-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
KillWait=30
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -c -f "$conf"
  slurmd -c -f "$conf"
  for daemon in slurmctld slurmd; do
    for _ in $(seq 50); do [[ -s "$state/$daemon.pid" ]] && break; sleep 0.1; done
    echo "$daemon $(cat "$state/$daemon.pid")" >> "$pids"
  done
  for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)' && return 0
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  echo "SLURM node did not become idle; see $state/log" >&2
  return 1
}

case "$action" in
  start) start || { stop; exit 1; } ;;
  stop) stop ;;
  *) echo "usage: cluster.sh start|stop STATE_DIR" >&2; exit 2 ;;
esac
