#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying the SLURM profile (workflow/profiles/slurm) and
# for tests/test_slurm.py. Partitions `cpu` (the default) and `gpu` on the one node, no GPUs (GRES) and
# no accounting (status is polled with squeue), state and logs under $RAYGEN_SLURM_DIR.
#
#   scripts/slurm_cluster.sh start    # as root: installs slurm-wlm + munge (apt) when missing, starts it
#   scripts/slurm_cluster.sh status   # exit 0 when the node takes jobs
#   scripts/slurm_cluster.sh stop     # stops the daemons it started
#
# The config is /etc/slurm/slurm.conf, where Debian's SLURM commands look for it; the script writes it only
# when it is absent or was written by this script, so it never replaces a real cluster's config.
# Environment: RAYGEN_SLURM_DIR (default ${TMPDIR:-/tmp}/raygen-slurm).
set -euo pipefail

STATE="${RAYGEN_SLURM_DIR:-${TMPDIR:-/tmp}/raygen-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by raygen scripts/slurm_cluster.sh"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge

die() {
    echo "slurm_cluster.sh: error: $*" >&2
    exit 1
}
say() { echo "slurm_cluster.sh: $*"; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root (slurmd and munged run as root); run it with sudo"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and there is no apt-get to install them"
    say "installing slurm-wlm and munge (apt-get)"
    # Debian's postinst scripts would start the daemons through init; this script starts its own.
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1 \
        || { apt-get update >>"$STATE/apt.log" 2>&1 \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge \
                >>"$STATE/apt.log" 2>&1; } \
        || die "apt-get install slurm-wlm munge failed; see $STATE/apt.log"
}

# A daemon's pid file names a live process (checked through /proc: a user may ask about root's daemons).
alive() { [[ -f "$1" ]] && [[ -d "/proc/$(cat "$1")" ]]; }

start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating the munge key $MUNGE_KEY"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile="$MUNGE_KEY" 2>/dev/null || dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    fi
    # A munged already serving the socket (the host's own) is used as it is.
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0755 "$STATE/munge"
    runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
        || die "munged did not start; see $STATE/munge/munged.log"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munge does not answer; see $STATE/munge/munged.log"
}

write_config() {
    if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script (a real cluster's config?); move it away first"
    fi
    local node host
    # The node's CPUs, sockets and memory as slurmd itself sees them (its first output line).
    node=$(slurmd -C | head -n 1) || die "slurmd -C failed"
    [[ $node == NodeName=* ]] || die "unexpected slurmd -C output: $node"
    host=$(hostname -s)
    node=$(sed -E "s/^NodeName=[^ ]+/NodeName=$host/" <<<"$node")
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    cat >"$CONF" <<EOF
$MARKER (state in $STATE)
ClusterName=raygen
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# No cgroups: containers and CI machines seldom delegate them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No slurmdbd: Snakemake polls job states with squeue, which sees a finished job for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
$node State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
}

node_ready() {
    local state
    state=$(sinfo --noheader --partition=cpu -o %t 2>/dev/null | head -n 1) || return 1
    [[ $state == idle* || $state == mix* || $state == alloc* ]]
}

cmd_start() {
    need_root start
    mkdir -p "$STATE"
    install_packages
    if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && node_ready; then
        say "already running (state in $STATE)"
        return
    fi
    start_munge
    write_config
    # -c: a fresh queue each start (jobs of an earlier session are not resumed).
    alive "$STATE/slurmctld.pid" || slurmctld -c -i || die "slurmctld did not start; see $STATE/slurmctld.log"
    alive "$STATE/slurmd.pid" || slurmd || die "slurmd did not start; see $STATE/slurmd.log"
    for _ in $(seq 100); do
        if node_ready; then
            say "running: partitions cpu (default) and gpu on $(hostname -s) (state in $STATE)"
            return
        fi
        sleep 0.2
    done
    scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    node_ready || die "the node did not come up; see $STATE/slurmctld.log and $STATE/slurmd.log ($(sinfo 2>&1 | tail -n 2))"
}

stop_pid() {
    local file=$1
    alive "$file" || return 0
    local pid
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
    need_root stop
    # Jobs still queued or running belong to whoever submitted them; cancel them so slurmd can stop.
    if alive "$STATE/slurmctld.pid"; then
        squeue --noheader -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    fi
    stop_pid "$STATE/slurmd.pid"
    stop_pid "$STATE/slurmctld.pid"
    stop_pid "$STATE/munge/munged.pid"
    say "stopped (state kept in $STATE)"
}

cmd_status() {
    # Asks SLURM itself, not this shell's state dir: `sudo` may have started it with another environment.
    if grep -qF "$MARKER" "$CONF" 2>/dev/null && node_ready; then
        sinfo
        return 0
    fi
    say "not running (state dir $STATE)"
    return 1
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
