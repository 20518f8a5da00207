#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to run launch/slurm.sbatch for real (the test
# tests/test_slurm.py uses it when it answers). Needs root and Debian's packages:
#   apt-get install slurm-wlm munge && bash launch/local_slurm_cluster.sh
# It writes /etc/slurm/slurm.conf (one node: this host, its CPUs and memory, one partition)
# and starts munged, slurmctld and slurmd; `bash launch/local_slurm_cluster.sh stop` stops them.
set -euo pipefail
if [ "${1:-}" = stop ]; then
    pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
    exit 0
fi
host=$(hostname)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
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
pgrep -x munged > /dev/null || su -s /bin/sh munge -c "/usr/sbin/munged"
pgrep -x slurmctld > /dev/null || slurmctld
pgrep -x slurmd > /dev/null || slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then sinfo; exit 0; fi
    sleep 1
done
echo "the local cluster did not come up: see /var/log/slurm/" >&2
exit 1
