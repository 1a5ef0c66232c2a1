#!/usr/bin/env bash
# Stop the test cluster started by slurm_up.sh. Idempotent; packages stay installed.
# Daemons are stopped only through their own pid files, never by name, and only when the pid
# still belongs to that daemon, so nothing else on the machine is touched. --keep-munge leaves
# munged running (slurm_up.sh uses it on a config change).
set -euo pipefail

state=${ORCH_SLURM_STATE:-/var/lib/orch-slurm}
daemons=("$state/slurmd.pid slurmd" "$state/slurmctld.pid slurmctld")
[ "${1:-}" = --keep-munge ] || daemons+=("/run/munge/munged.pid munged")

for entry in "${daemons[@]}"; do
  read -r file name <<<"$entry"
  [ -s "$file" ] || continue
  pid=$(cat "$file")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
    kill -TERM "$pid"
    # Up to 10 s for a clean shutdown (slurmctld saves its state), then SIGKILL.
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  fi
  rm -f "$file"
done
echo "slurm down"
