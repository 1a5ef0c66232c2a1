#!/usr/bin/env bash
# Bring up a one-node Slurm cluster on this machine for the slurm executor's tests.
# Idempotent: installs what is missing, starts only daemons that are not already running.
# We run as root in a container without systemd, so the daemons are started by hand and
# tracked through their pid files. Exit 0 with "slurm up: <node> (<n> cpus)", or one line
# on stderr and non-zero (the tests then skip the cluster tests with a visible notice).
set -euo pipefail

state=${ORCH_SLURM_STATE:-/var/lib/orch-slurm}
conf=/etc/slurm/slurm.conf

die() {
  echo "slurm_up: $*" >&2
  exit 1
}

# The daemon is up when its pid file names a live process of that name (a stale file whose
# pid was reused by something else does not count): then do not start a second one.
running() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"

mkdir -p "$state"
# Parallel test workers may call this at once: one at a time, so no daemon starts twice.
exec 9>"$state/up.lock"
flock -w 120 9 || die "another slurm_up.sh holds $state/up.lock"

missing=0
for cmd in sbatch slurmctld slurmd munged; do
  command -v "$cmd" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  # Only refresh the lists when apt does not know the packages yet: update is the slow part.
  if ! apt-cache show slurmctld >/dev/null 2>&1; then
    apt-get update -qq >/dev/null || die "apt-get update failed"
  fi
  # No recommends: they add ~40 plugin and -dev packages we never load. policy-rc.d 101
  # stops the packages' init scripts from starting daemons we start ourselves.
  # An image's own policy-rc.d is left as it is.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  install_pkgs() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >>"$state/apt.log" 2>&1
  }
  # Stale lists name versions the mirror no longer has: refresh once and retry.
  install_pkgs || { apt-get update -qq >>"$state/apt.log" 2>&1 && install_pkgs; } \
    || die "apt-get install of slurm failed (see $state/apt.log)"
fi

# munge: Debian's postinst normally creates the key; make one if it did not.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! running /run/munge/munged.pid munged; then
  runuser -u munge -- /usr/sbin/munged 9>&- || die "munged failed to start"
fi

node=$(hostname -s)
cpus=$(nproc)
# 80% of MemTotal: slurmd drains a node that reports less memory than configured.
mem=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)

mkdir -p "$state/ctld" "$state/d" /etc/slurm
new=$(
  cat <<EOF
# Written by orch scripts/slurm_up.sh: one node on 127.0.0.1, for tests only.
ClusterName=orch
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
# No cgroups in a container: track processes by parentage, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No slurmdbd: orch takes exit codes from a file, never from accounting.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Quiet the log: no mail, no MPI (PMIx is not installed).
MailProg=/bin/true
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Trust the values below rather than draining the node over a hardware mismatch.
SlurmdParameters=config_overrides
ReturnToService=2
# Short timeouts keep the tests quick.
MinJobAge=5
KillWait=2
CompleteWait=0
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmdTimeout=30
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ "$(cat "$conf" 2>/dev/null)" != "$new" ]; then
  # A changed node or path needs fresh daemons, not just a reconfigure.
  if running "$state/slurmctld.pid" slurmctld || running "$state/slurmd.pid" slurmd; then
    ORCH_SLURM_STATE=$state bash "$(dirname "$0")/slurm_down.sh" --keep-munge >/dev/null
  fi
  printf '%s\n' "$new" >"$conf"
fi

# Both daemonize and write their pid files; their logs are in $state. No daemon may inherit
# the lock (fd 9), or the next slurm_up.sh would wait on it for ever.
if ! running "$state/slurmctld.pid" slurmctld; then
  slurmctld 9>&- || die "slurmctld failed to start (see $state/slurmctld.log)"
fi
if ! running "$state/slurmd.pid" slurmd; then
  slurmd 9>&- || die "slurmd failed to start (see $state/slurmd.log)"
fi

# Bounded wait for the node to be schedulable; a node left down/drained by an earlier run
# is resumed (ReturnToService=2 covers most, not an admin drain).
# A trailing "*" (e.g. "idle*") means slurmd is not responding yet: not ready. sinfo gets a
# timeout because a client retries a controller that is not listening yet for MessageTimeout.
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
  st=$(timeout 3 sinfo -h -n "$node" -o %T 2>/dev/null || true)
  case "$st" in
  idle | mixed | allocated | completing) break ;;
  down* | drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$st" in
idle | mixed | allocated | completing) ;;
*) die "node $node not ready after 20 s (state '${st:-none}', see $state/slurmd.log)" ;;
esac

timeout 30 sbatch --wait --parsable --quiet --output=/dev/null --chdir=/ --job-name=orch-smoke \
  --wrap true >/dev/null || die "smoke job (sbatch --wait --wrap true) failed"

echo "slurm up: $node ($cpus cpus)"
