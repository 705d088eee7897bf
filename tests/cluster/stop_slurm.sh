#!/usr/bin/env bash
# Stop what start_slurm.sh started, by its pid files (never by process name), and put back the
# slurm.conf that was there before (none, on a machine without SLURM).
state=${1:-/tmp/ndmha-slurm}
for daemon in slurmd slurmctld munged; do
    pidfile="$state/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
done
if [ -e "$state/slurm.conf.before" ]; then
    if [ -s "$state/slurm.conf.before" ]; then cp "$state/slurm.conf.before" /etc/slurm/slurm.conf
    else rm -f /etc/slurm/slurm.conf; fi
    rm -f "$state/slurm.conf.before"
fi
