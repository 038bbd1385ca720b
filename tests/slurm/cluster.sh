#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (root), for tests/test_slurm.py.
# Usage: cluster.sh STATE_DIR   (prints nothing on success; slurmctld/slurmd run in background)
set -euo pipefail
state="$1"
mkdir -p "$state"/{spool,ctld,log}
if ! command -v slurmctld >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
fi
mkdir -p /run/munge /var/log/munge /etc/munge
[[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
chown -R munge:munge /etc/munge /run/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force
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
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 0.5
slurmctld -c -f "$conf"
slurmd -c -f "$conf"
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)' && exit 0
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 0.5
done
echo "SLURM node did not become idle; see $state/log" >&2
exit 1
