#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for the integration tests (root, no systemd).
#   tests/cluster/start_slurm.sh [STATE_DIR]      -> prints STATE_DIR; stop with stop_slurm.sh
# Installs Debian's slurm-wlm and munge when they are missing (apt), writes slurm.conf for this
# host, starts munged, slurmctld and slurmd, and waits until sinfo shows the node idle.
# Accounting storage is off: sacct is unavailable, so Snakemake's SLURM plugin must be run with
# --slurm-status-command squeue. Exits non-zero with the reason on stderr when it cannot.
set -euo pipefail
state=${1:-/tmp/ndmha-slurm}
say() { echo "start_slurm: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || { say "no slurmctld/munged and no apt-get to install them"; exit 1; }
    [ "$(id -u)" = 0 ] || { say "installing slurm-wlm needs root"; exit 1; }
    (apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
     { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; }) ||
        { say "apt-get install slurm-wlm munge failed"; exit 1; }
fi
[ "$(id -u)" = 0 ] || { say "slurmd must run as root here"; exit 1; }

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
mkdir -p "$state"/{spool,slurmd,log,munge} /etc/slurm /run/munge /var/log/munge /var/lib/munge
[ -f /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key

# stop_slurm.sh puts back whatever slurm.conf was there: a slurm.conf whose controller is gone
# makes every SLURM client, and so Snakemake's SLURM plugin at import, wait ~10 s for it
if [ ! -e "$state/slurm.conf.before" ]; then
    if [ -e /etc/slurm/slurm.conf ]; then cp /etc/slurm/slurm.conf "$state/slurm.conf.before"
    else : > "$state/slurm.conf.before"; fi
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ndmha-test
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

if ! pgrep -F "$state/munged.pid" >/dev/null 2>&1; then
    munged --force --pid-file="$state/munged.pid" 2>"$state/log/munged.err" ||
        runuser -u munge -- munged --force --pid-file="$state/munged.pid" ||
        { say "munged did not start: $(cat "$state/log/munged.err")"; exit 1; }
fi
pgrep -F "$state/slurmctld.pid" >/dev/null 2>&1 || slurmctld || { say "slurmctld did not start"; exit 1; }
pgrep -F "$state/slurmd.pid" >/dev/null 2>&1 || slurmd || { say "slurmd did not start"; exit 1; }

for _ in $(seq 60); do
    if sinfo -h -o "%t" 2>/dev/null | grep -qx "idle"; then
        echo "$state"
        exit 0
    fi
    sleep 1
done
say "the node did not become idle within 60 s: $(sinfo 2>&1 | tail -2 | tr '\n' ' ')"
tail -n 5 "$state/log/slurmctld.log" "$state/log/slurmd.log" >&2 || true
exit 1
