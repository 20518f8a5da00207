#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to run launch/slurm.sbatch for real (the test
# tests/test_slurm.py uses it when it answers). Needs root and Debian's packages:
#   apt-get install slurm-wlm munge && bash launch/local_slurm_cluster.sh
# It writes /etc/slurm/slurm.conf (one node: this host, its CPUs and memory, one partition)
# and starts munged, slurmctld and slurmd; `bash launch/local_slurm_cluster.sh stop` stops them.
# A machine with a Slurm of its own is left alone: a slurm.conf this script did not write is
# never replaced, and stop ends only the daemons this script started (their pids are kept in
# $started), never others of the same name.
set -euo pipefail
started=${LOCAL_SLURM_STATE:-/run/sonar_t5_local_slurm}  # the pids of what it started
marker="# written by sonar-t5's launch/local_slurm_cluster.sh"
if [ "${1:-}" = stop ]; then
    for file in "$started"/*.pid; do
        [ -e "$file" ] || continue
        name=$(basename "$file" .pid); pid=$(cat "$file")
        # the pid still names the daemon this script started (not a process that reused it)
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then kill "$pid"; fi
        rm -f "$file"
    done
    exit 0
fi
if [ -e /etc/slurm/slurm.conf ] && ! grep -qxF "$marker" /etc/slurm/slurm.conf; then
    echo "/etc/slurm/slurm.conf was not written by this script: this machine has a Slurm of" \
         "its own, left as it is (use it, or move that file away first)" >&2
    exit 2
fi
host=$(hostname)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
$marker
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# A requeued job starts again once its last credential has expired: 120 s by default, 20 s
# on this test cluster (forcing an earlier start fails it: "Job credential revoked").
AuthInfo=cred_expire=20
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
chown munge:munge /run/munge
mkdir -p "$started"
start() {  # NAME COMMAND...: unless one runs, start it (it becomes a daemon) and keep its pid
    local name=$1; shift
    pgrep -x "$name" > /dev/null && return 0
    "$@"
    pgrep -n -x "$name" > "$started/$name.pid"
}
start munged su -s /bin/sh munge -c /usr/sbin/munged
start slurmctld slurmctld
start slurmd slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then sinfo; exit 0; fi
    sleep 1
done
echo "the local cluster did not come up: see /var/log/slurm/" >&2
exit 1
