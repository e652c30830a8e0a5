#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for the pipeline's SLURM test and for trying the
# `workflow/profiles/slurm` profile by hand. Debian/Ubuntu (Slurm >= 22.05), as root, no systemd needed.
#
#   tests/slurm/cluster.sh install          apt-get install slurm-wlm munge (skipped when already installed)
#   tests/slurm/cluster.sh start [--force]  munged (unless one answers) + slurmctld + slurmd; waits for the node
#   tests/slurm/cluster.sh status           daemons and node state; exit 0 when the cluster answers, 1 when not
#   tests/slurm/cluster.sh logs             last lines of the daemons' logs
#   tests/slurm/cluster.sh stop             cancels its jobs, stops what `start` started (by pid files), cleans up
#
# `start` and `stop` are safe to repeat: a running cluster is reported and left alone, a stopped one is a no-op.
#
# Files: one scratch folder, $SLIDETILES_SLURM_DIR (default /tmp/slidetiles-slurm), holds slurm.conf, pid
# files, state, spool and logs; `stop` removes it. (Not $SLURM_SCRATCH: many sites set that to a job's scratch.)
#
# How clients find the configuration (decided by testing, Debian 12's Slurm 22.05.8 with
# snakemake-executor-plugin-slurm 2.8.0): nothing is written to /etc/slurm. slurmctld reads our slurm.conf
# (SLURM_CONF) and serves it ("configless" mode, SlurmctldParameters=enable_configless); slurmd fetches it with
# --conf-server and caches it, and links /run/slurm/conf to that cache. Every Slurm command on this machine
# (sinfo, squeue, sbatch, scancel, scontrol, srun) looks there when there is no SLURM_CONF and no
# /etc/slurm/slurm.conf, so nothing needs exporting. Pointing the clients at the file with SLURM_CONF alone
# is NOT enough: the plugin's job step inside each SLURM job runs `srun` with every SLURM_* variable except
# the job ids stripped from its environment, so that srun found no configuration ("Could not establish a
# configuration source") and every job failed. Consequently a foreign /etc/slurm/slurm.conf (this machine is
# already a Slurm node) would shadow ours: `start` refuses, or with --force renames it to
# slurm.conf.slidetiles-moved until `stop` puts it back. `stop` also removes the /run/slurm/conf link.
#
# Cluster: ClusterName=slidetiles, one node named `hostname -s` (address 127.0.0.1), CPUs=$(nproc),
# RealMemory 5% under what `slurmd -C` reports; one partition `debug` (the default). No accounting
# (accounting_storage/none), so `sacct` knows no jobs: Snakemake's plugin needs `--slurm-status-command squeue`.
# MinJobAge=600 keeps finished jobs in squeue for 10 minutes, which is how the plugin sees them COMPLETED (and it
# keeps squeue only while MinJobAge >= 3 x --slurm-init-seconds-before-status-checks).
#
# Environment: SLIDETILES_SLURM_DIR (scratch folder), SLIDETILES_SLURM_TIMEOUT (seconds `start` waits for the
# node, default 90), SLIDETILES_SLURMCTLD_PORT / SLIDETILES_SLURMD_PORT (default 6817 / 6818).
set -euo pipefail

PROG=${0##*/}
DIR=${SLIDETILES_SLURM_DIR:-/tmp/slidetiles-slurm}
DIR=$(realpath -m -- "$DIR")
CONF=$DIR/slurm.conf
MARK=$DIR/.slidetiles-slurm          # says "this folder is ours", so `stop` may delete it
TIMEOUT=${SLIDETILES_SLURM_TIMEOUT:-90}
CTLD_PORT=${SLIDETILES_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLIDETILES_SLURMD_PORT:-6818}
ETC_CONF=/etc/slurm/slurm.conf
ETC_MOVED=/etc/slurm/slurm.conf.slidetiles-moved
RUN_CONF=/run/slurm/conf                  # where slurmd links its cached configuration, and clients look
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_PIDFILE=/run/munge/munged.pid
NODE=$(hostname -s)

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "'$1' must run as root (slurmd runs jobs as their users); try: sudo $0 $1"
}

# Whether PID is the named program and alive (a zombie, dead but not yet reaped, counts as dead).
alive() {  # alive PID NAME
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# The pid in a pid file if that process is alive and is the named program; empty otherwise.
live_pid() {  # live_pid PIDFILE NAME
    local pid
    [ -s "$1" ] || return 0
    pid=$(tr -dc '0-9' <"$1")
    if [ -n "$pid" ] && alive "$pid" "$2"; then echo "$pid"; fi
    return 0
}

# Pids of processes with exactly this name: a read-only look-up, nothing is ever signalled by name.
pids_named() {
    local comm p
    for comm in /proc/[0-9]*/comm; do
        p=${comm#/proc/}; p=${p%/comm}
        if alive "$p" "$1"; then echo "$p"; fi
    done
}

munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

# Node state as a client sees it: `ours` reads our file, `unaided` what any client on this machine finds.
node_state() {  # node_state ours|unaided
    if [ "$1" = ours ]; then SLURM_CONF=$CONF timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true
    else env -u SLURM_CONF timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true; fi
}
is_up() { case $1 in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }  # `idle*` = no answer

ctld_answers() { SLURM_CONF=$CONF timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }

# Our link: /run/slurm/conf -> $DIR/spool/conf-cache (possibly dangling after a crash).
run_conf_is_ours() { [ -L "$RUN_CONF" ] && [[ $(readlink "$RUN_CONF") == "$DIR"/* ]]; }

log_tails() {
    local f
    for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" /var/log/munge/munged.log; do
        [ -s "$f" ] || continue
        echo "----- last lines of $f -----"
        tail -n 25 "$f"
    done
}

stop_pid() {  # stop_pid PID NAME: TERM, up to 15 s, then KILL
    local pid=$1 name=$2
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 30); do
        alive "$pid" "$name" || return 0
        sleep 0.5
    done
    say "$name (pid $pid) still running after 15 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
}

slurm_version() { dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm 2>/dev/null || slurmctld -V 2>/dev/null || true; }

cmd_install() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    if [ ${#missing[@]} -eq 0 ]; then
        say "slurm-wlm and munge already installed ($(slurm_version))"
        return 0
    fi
    need_root install
    command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge with your package manager"
    local log
    log=$(mktemp)
    say "installing ${missing[*]} with apt-get (about a minute)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Options::=--force-confold slurm-wlm munge; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "apt-get install slurm-wlm munge failed"
    fi
    rm -f "$log"
    say "installed $(slurm_version)"
}

start_munge() {
    if munge_ok; then
        [ -n "$(live_pid "$DIR/munged.pid" munged)" ] || say "munged already running (not ours: left running)"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    # A dead munged leaves its socket and pid file behind, and a new one refuses to start over them.
    [ -n "$(live_pid "$MUNGE_PIDFILE" munged)" ] || rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PIDFILE"
    # 9>&-: no daemon may inherit (and so keep holding) this script's lock.
    su -s /bin/sh munge -c "/usr/sbin/munged --socket=$MUNGE_SOCKET --pid-file=$MUNGE_PIDFILE" 9>&- \
        || { log_tails >&2; die "munged failed to start"; }
    for _ in $(seq 1 40); do munge_ok && break; sleep 0.25; done
    munge_ok || { log_tails >&2; die "munged started, but 'munge -n | unmunge' fails"; }
    cp "$MUNGE_PIDFILE" "$DIR/munged.pid"   # ours: `stop` stops it
    say "munged started (pid $(cat "$DIR/munged.pid"))"
}

write_conf() {
    local cpus mem real_mem
    cpus=$(nproc)
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [ -n "$mem" ] || mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # A bit under what slurmd measures, or it reports "Low RealMemory" and the node is drained.
    real_mem=$(( mem - (mem / 20 > 256 ? mem / 20 : 256) ))
    [ "$real_mem" -ge 256 ] || real_mem=$mem
    cat >"$CONF.tmp" <<EOF
# Written by tests/slurm/cluster.sh: a one-node test cluster, removed by 'cluster.sh stop'.
ClusterName=slidetiles
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmctldParameters=enable_configless
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
DefMemPerCPU=1000
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

lock() {
    exec 9>"$DIR/.lock"
    flock -w 120 9 || die "another '$PROG' holds $DIR/.lock"
}

cmd_start() {
    local force=0
    case ${1:-} in --force) force=1 ;; "") ;; *) die "unknown option to start: $1 (only --force)" ;; esac
    need_root start
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
        die "slurmctld, slurmd or munged missing: run '$0 install' first"
    fi
    mkdir -p "$DIR"
    [ -e "$MARK" ] || [ -z "$(ls -A "$DIR")" ] || die "$DIR is not $PROG's folder; set SLIDETILES_SLURM_DIR"
    touch "$MARK"
    lock

    local ctld_pid slurmd_pid state p waited=0
    ctld_pid=$(live_pid "$DIR/slurmctld.pid" slurmctld)
    slurmd_pid=$(live_pid "$DIR/slurmd.pid" slurmd)
    if [ -n "$ctld_pid" ] && [ -n "$slurmd_pid" ] && munge_ok; then
        state=$(node_state unaided)
        if is_up "$state"; then
            say "already running (slurmctld $ctld_pid, slurmd $slurmd_pid, node $NODE $state, partition debug)"
            return 0
        fi
    fi

    # Someone else's Slurm on this machine: do not fight it for ports, node names or /run/slurm/conf.
    for p in $(pids_named slurmctld) $(pids_named slurmd); do
        [ "$p" = "$ctld_pid" ] || [ "$p" = "$slurmd_pid" ] \
            || die "a Slurm daemon not started by $PROG runs (pid $p, $(cat /proc/"$p"/comm)); stop it first"
    done
    for p in "$CTLD_PORT" "$SLURMD_PORT"; do
        if ss -Hltn "sport = :$p" 2>/dev/null | grep -q . && [ -z "$ctld_pid$slurmd_pid" ]; then
            die "port $p is in use; choose others with SLIDETILES_SLURMCTLD_PORT / SLIDETILES_SLURMD_PORT"
        fi
    done
    if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
        [ "$force" -eq 1 ] || die "$ETC_CONF exists: this machine has a Slurm configuration of its own, which" \
            "Slurm commands would read instead of this cluster's. Run '$0 start --force' to rename it to" \
            "$ETC_MOVED until '$0 stop' puts it back."
        [ ! -e "$ETC_MOVED" ] || die "both $ETC_CONF and $ETC_MOVED exist; sort them out by hand"
        mv "$ETC_CONF" "$ETC_MOVED"
        echo "$ETC_MOVED" >"$DIR/etc-conf-moved"
        say "moved $ETC_CONF to $ETC_MOVED ('$0 stop' restores it)"
    fi
    if [ -e "$RUN_CONF" ] || [ -L "$RUN_CONF" ]; then
        if [ -z "$slurmd_pid" ] && { run_conf_is_ours || [ ! -e "$RUN_CONF" ]; }; then
            rm -f "$RUN_CONF"   # ours from an earlier run, or dangling
        elif ! run_conf_is_ours; then
            die "$RUN_CONF exists and is not this cluster's (another configless slurmd?); remove it if stale"
        fi
    fi
    [ -d /run/slurm ] || { mkdir -p /run/slurm; touch "$DIR/run-slurm-created"; }

    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 0755 "$DIR"
    start_munge
    if [ -z "$ctld_pid" ] || [ ! -s "$CONF" ]; then write_conf; fi

    if [ -z "$ctld_pid" ]; then
        # -c: a clean start, no jobs or node state recovered from an earlier run.
        SLURM_CONF=$CONF slurmctld -c 9>&- || { log_tails >&2; die "slurmctld failed to start"; }
    fi
    until ctld_answers; do
        if [ "$waited" -ge "$TIMEOUT" ]; then
            log_tails >&2
            die "slurmctld does not answer after ${TIMEOUT}s; logs in $DIR/log; '$0 stop' cleans up"
        fi
        sleep 1; waited=$((waited + 1))
    done
    if [ -z "$slurmd_pid" ]; then
        # Configless: slurmd fetches slurm.conf from slurmctld and links its cache to /run/slurm/conf.
        env -u SLURM_CONF slurmd -N "$NODE" --conf-server "127.0.0.1:$CTLD_PORT" 9>&- \
            || { log_tails >&2; die "slurmd failed to start"; }
    fi

    while :; do
        state=$(node_state ours)
        is_up "$state" && break
        if [ "$waited" -ge "$TIMEOUT" ]; then
            { echo "----- sinfo -----"; SLURM_CONF=$CONF timeout 10 sinfo -N -l 2>&1 || true; log_tails; } >&2
            die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-no answer}'); logs in $DIR/log;" \
                "'$0 stop' cleans up"
        fi
        sleep 1; waited=$((waited + 1))
    done
    is_up "$(node_state unaided)" || die "the cluster is up, but Slurm commands without SLURM_CONF do not find" \
        "it through $RUN_CONF ($(ls -ld "$RUN_CONF" 2>&1)); this needs Slurm >= 22.05 and no $ETC_CONF"
    say "cluster up in ${waited}s: slurmctld $(cat "$DIR/slurmctld.pid"), slurmd $(cat "$DIR/slurmd.pid")," \
        "node $NODE $state ($(nproc) CPUs), partition debug; $RUN_CONF -> $CONF; logs in $DIR/log"
}

cmd_status() {
    local ctld_pid slurmd_pid munge_pid state rc=0
    ctld_pid=$(live_pid "$DIR/slurmctld.pid" slurmctld)
    slurmd_pid=$(live_pid "$DIR/slurmd.pid" slurmd)
    munge_pid=$(live_pid "$DIR/munged.pid" munged)
    echo "folder:     $DIR$([ -e "$MARK" ] || echo ' (none)')"
    echo "slurmctld:  ${ctld_pid:-not running}"
    echo "slurmd:     ${slurmd_pid:-not running}"
    if munge_ok; then
        echo "munged:     running$([ -n "$munge_pid" ] && echo " (pid $munge_pid, ours)" || echo ' (not ours)')"
    else
        echo "munged:     not running"
    fi
    state=$(node_state unaided)
    echo "node:       $NODE ${state:-no answer}"
    is_up "$state" || rc=1
    return "$rc"
}

cmd_stop() {
    if [ ! -e "$MARK" ]; then
        run_conf_is_ours && [ ! -e "$RUN_CONF" ] && rm -f "$RUN_CONF"
        say "not running (no $DIR)"
        return 0
    fi
    need_root stop
    lock
    local ctld_pid slurmd_pid munge_pid ids stopped=""
    ctld_pid=$(live_pid "$DIR/slurmctld.pid" slurmctld)
    slurmd_pid=$(live_pid "$DIR/slurmd.pid" slurmd)
    munge_pid=$(live_pid "$DIR/munged.pid" munged)
    if [ -n "$ctld_pid" ]; then
        # This cluster's jobs: cancel them, so that no slurmstepd outlives its slurmd.
        ids=$(SLURM_CONF=$CONF timeout 10 squeue -h -t PD,R,CG,S -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [ -n "${ids// /}" ]; then
            say "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            SLURM_CONF=$CONF timeout 10 scancel $ids 2>/dev/null || true
            for _ in $(seq 1 30); do
                [ -z "$(SLURM_CONF=$CONF timeout 10 squeue -h -t R,CG -o %A 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    [ -z "$slurmd_pid" ] || { stop_pid "$slurmd_pid" slurmd; stopped+=" slurmd($slurmd_pid)"; }
    [ -z "$ctld_pid" ] || { stop_pid "$ctld_pid" slurmctld; stopped+=" slurmctld($ctld_pid)"; }
    [ -z "$munge_pid" ] || { stop_pid "$munge_pid" munged; stopped+=" munged($munge_pid)"; }
    ! run_conf_is_ours || rm -f "$RUN_CONF"
    [ ! -e "$DIR/run-slurm-created" ] || rmdir /run/slurm 2>/dev/null || true
    if [ -s "$DIR/etc-conf-moved" ] && [ -e "$ETC_MOVED" ] && [ ! -e "$ETC_CONF" ]; then
        mv "$ETC_MOVED" "$ETC_CONF"
        say "restored $ETC_CONF"
    fi
    exec 9>&-
    rm -rf -- "$DIR"
    say "stopped:${stopped:- nothing was running}; removed $DIR"
}

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

case ${1:-} in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    logs) log_tails ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
