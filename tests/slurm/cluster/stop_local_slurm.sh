#!/usr/bin/env bash
# stop_local_slurm.sh - stop ONLY the daemons that start_local_slurm.sh started under $SLURMTEST_DIR.
#
#   SLURMTEST_DIR=/tmp/x tests/slurm/cluster/stop_local_slurm.sh
#
# Cancels the jobs, then stops slurmd(s), slurmctld and munged by their PID files (SIGTERM, SIGKILL
# after 10 s).  Never kills by name: a PID is signalled only if /proc/PID/comm is the expected
# program AND its command line, environment or working directory points into $SLURMTEST_DIR, so
# stale or reused PIDs are safe.  Exits 1 if one of our processes is still alive at the end.
set -uo pipefail
DIR=${SLURMTEST_DIR:?set SLURMTEST_DIR}
RUN=$DIR/run
export SLURM_CONF=$DIR/slurm.conf
log() { printf '[stop_local_slurm] %s\n' "$*" >&2; }

# ours PID COMM -> 0 if PID is alive, runs COMM and belongs to this test cluster
ours() {
    local pid=$1 comm=$2
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    [[ $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) != Z ]] || return 1   # zombie = dead
    { tr '\0' '\n' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$DIR" && return 0
    { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SLURMTEST_DIR=$DIR" && return 0
    # slurmstepd / slurmscriptd rewrite argv and environ, but they chdir into our directories
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)/" in "$DIR"/*) return 0 ;; esac
    return 1
}
pid_from() { [[ -s $1 ]] && tr -dc '0-9' < "$1"; }

# stop_pid PIDFILE COMM: SIGTERM, up to 10 s grace, then SIGKILL; the PID file goes either way
stop_pid() {
    local file=$1 comm=$2 pid
    pid=$(pid_from "$file") || { rm -f "$file"; return 0; }
    if ours "$pid" "$comm"; then
        log "stopping $comm (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do ours "$pid" "$comm" || break; sleep 0.1; done
        if ours "$pid" "$comm"; then log "$comm $pid still alive: SIGKILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
    fi
    rm -f "$file"
}

# 1. cancel the jobs first, so their slurmstepd processes end cleanly
if ours "$(pid_from "$RUN/slurmctld.pid")" slurmctld; then
    mapfile -t jobs < <(timeout 10 squeue -h -o '%i' 2>/dev/null)
    if ((${#jobs[@]})); then
        log "cancelling jobs: ${jobs[*]}"
        timeout 10 scancel "${jobs[@]}" 2>/dev/null
        for _ in $(seq 50); do [[ -z $(timeout 5 squeue -h -t R,CG,PD -o '%i' 2>/dev/null) ]] && break; sleep 0.2; done
    fi
fi

# 2. daemons: slurmd(s), slurmctld, munged
for file in "$RUN"/slurmd.*.pid; do [[ -e $file ]] && stop_pid "$file" slurmd; done
stop_pid "$RUN/slurmctld.pid" slurmctld
stop_pid "$DIR/munge/munged.pid" munged

# 3. helpers our daemons spawned (slurmstepd of killed jobs, slurmscriptd), then a last check
leftovers() {
    local p pid comm
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        for comm in "$@"; do ours "$pid" "$comm" && echo "$pid:$comm"; done
    done
}
for entry in $(leftovers slurmstepd slurmscriptd); do
    log "killing leftover ${entry#*:} ${entry%%:*}"; kill -KILL "${entry%%:*}" 2>/dev/null
done
left=$(leftovers munged slurmctld slurmscriptd slurmd slurmstepd | tr '\n' ' ')
if [[ -n ${left// } ]]; then log "WARNING: still running: $left"; exit 1; fi
log "all test-cluster daemons stopped"
