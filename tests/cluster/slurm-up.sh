#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, with accounting (slurmdbd + MariaDB), for the
# slow cluster tests (tests/test_slurm.py) and for .ci/run. Debian 12's slurm-wlm 22.05.
#
# Accounting is not optional: submitit reads a job's final state through `sacct`; without slurmdbd a job
# that the scheduler cancelled stays UNKNOWN and a Hydra driver waits forever.
# No systemd and no cgroups here (containers, gVisor): proctrack/linuxproc and task/none.
#
# Usage: tests/cluster/slurm-up.sh        (idempotent: does nothing if `sinfo` already answers)
#        tests/cluster/slurm-up.sh down   (stops the daemons by their pid files)
# Needs root (it installs packages and writes /etc/slurm). About a minute on 2 cores.
set -euo pipefail

if [[ "${1:-}" == down ]]; then
    for pid in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid; do
        [[ -f $pid ]] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    exit 0
fi

if command -v sinfo >/dev/null && timeout 5 sinfo -h -o %T 2>/dev/null | grep -q idle; then
    echo "slurm: already up"; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge \
        slurmdbd mariadb-server >/dev/null
fi

host=$(hostname)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))   # half the RAM for jobs
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /run/mysqld
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# a job past its time limit gets SIGTERM, then SIGKILL this many seconds later (submitit's requeue uses
# the signal it asks for with --signal; the grace period lets a run finish writing its checkpoint)
KillWait=30
# requeued jobs may start again at once (the default holds them 60 s+)
MinJobAge=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF

cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=ci
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
CONF
chmod 600 /etc/slurm/slurmdbd.conf

pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
if ! pgrep -x mariadbd >/dev/null; then
    runuser -u mysql -- /usr/sbin/mariadbd --bind-address=127.0.0.1 --socket=/run/mysqld/mysqld.sock \
        --innodb-buffer-pool-size=64M >/var/log/slurm/mariadb.log 2>&1 &
    for _ in $(seq 60); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'ci'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'"

pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 0.5; done
sinfo -h -o %T | grep -q idle || { echo "slurm: the node did not come up (see /var/log/slurm/)" >&2; exit 1; }
echo "slurm: up ($(sinfo -h -o '%P %D %T %c CPUs'))"
