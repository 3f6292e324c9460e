# bench/lib.sh — shell helpers shared by the benchmark scripts (sourced, not run): logging,
# ending every process a script started whatever the exit path, and time-bounded commands.
# The sourcing script sets KEEP (1 = keep $WORK) and may set WORK to its temporary directory.

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Cleanup: every process we start is recorded here and ended on exit, whatever the path.
PIDS=()
WORK=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Removes process $1 from the list cleanup() ends.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Stops one process we started (SIGTERM, then SIGKILL after 15 s) and forgets it.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

# Runs a command with a time limit of $1 seconds and returns its status. It runs in the
# background and is waited for, so that an INT or TERM reaches our trap at once (bash runs traps
# only after a foreground child ends) and cleanup() ends it.
run_bounded() {
    local limit=$1 pid rc=0
    shift
    timeout "$limit" "$@" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget "$pid"
    return "$rc"
}
