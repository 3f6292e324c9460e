#!/usr/bin/env bash
# Access-log benchmark (issue 9, part 3): what one access-log line per request costs mlrelay.
#
# Usage: bench/access_log.sh [-d SECONDS] [-c "CONNS..."] [-r RUNS] [-n] [-k]
#   -d  wrk seconds per measurement (default 10)
#   -c  wrk connection counts (default "1 64")
#   -r  runs; each run measures every mode anew, on a fresh process (default 3)
#   -n  do not (re)build build-rel/mlrelay; use it as it is (or $MLRELAY_BIN)
#   -k  keep the temporary directory (logs) and print where it is
# Environment: MLRELAY_BIN (default build-rel/mlrelay), BENCH_TMPDIR (default /var/tmp).
#
# wrk (one thread, keep-alive, bench/get.lua: GET / with an X-Opaque-Id header) against mlrelay
# in three modes, interleaved within each run:
#   off   --access-log false
#   text  the access log on, text format, stderr to a file in the temporary directory
#   json  the access log on, JSON format, stderr to the same kind of file
# GET / does no I/O besides the response, so the difference between the modes is the log line:
# formatting it and its one write(2) to stderr, on the loop thread. Reported per mode and
# connection count: requests/s, p50/p99 latency and mlrelay's CPU per request (user + system,
# from /proc), then the medians over the runs and the added CPU per request of each logging
# mode against off. On a 2-core machine wrk and mlrelay share the CPUs, so requests/s at many
# connections measures the pair; CPU per request is the figure to compare.
#
# Exits 0 when the measurements were made, 1 otherwise. Uses 127.0.0.1 only; ends what it
# started and removes its temporary directory on every exit path.
set -euo pipefail

DURATION=10
CONN_LIST="1 64"
RUNS=3
BUILD=1
KEEP=0
while getopts "d:c:r:nkh" opt; do
    case "$opt" in
    d) DURATION=$OPTARG ;;
    c) CONN_LIST=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    n) BUILD=0 ;;
    k) KEEP=1 ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${MLRELAY_BIN:-$ROOT/build-rel/mlrelay}

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

command -v wrk >/dev/null || {
    log "== installing wrk"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y --no-install-recommends wrk >/dev/null
}
if [ "$BUILD" = 1 ] && [ -z "${MLRELAY_BIN:-}" ]; then
    log "== building build-rel/mlrelay (RelWithDebInfo)"
    ./scripts/install-deps
    cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLR_TESTS=OFF >/dev/null
    cmake --build build-rel -j"$(nproc)" >/dev/null
fi
[ -x "$BIN" ] || { log "access_log.sh: no mlrelay binary at $BIN (drop -n to build it)"; exit 1; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/mlrelay-access.XXXXXX")
LUA=$ROOT/bench/get.lua
MODES="off text json"

# CPU seconds (user + system, all threads) of process $1 so far.
proc_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / hz }' \
        "/proc/$1/stat"
}

# Starts mlrelay in mode $1 with its files under $2; sets MLR_PID and MLR_PORT.
MLR_PID="" MLR_PORT=""
start_mlrelay() {
    local mode=$1 dir=$2 args=(--listen 127.0.0.1:0 --data-dir "$2/data")
    case "$mode" in
    off) args+=(--access-log false) ;;
    text) args+=(--access-log true --log-format text) ;;
    json) args+=(--access-log true --log-format json) ;;
    esac
    mkdir -p "$dir"
    : >"$dir/server.log" # exists before the server opens it, so the wait below can read it
    "$BIN" "${args[@]}" 2>>"$dir/server.log" </dev/null &
    MLR_PID=$!
    PIDS+=("$MLR_PID")
    MLR_PORT=""
    for _ in $(seq 100); do
        MLR_PORT=$(sed -n '/listening/s/.*port[^0-9]*\([0-9][0-9]*\).*/\1/p' "$dir/server.log" |
            head -1)
        [ -n "$MLR_PORT" ] && break
        kill -0 "$MLR_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$MLR_PORT" ] || { log "mlrelay did not start:"; cat "$dir/server.log" >&2; return 1; }
}

# One measurement: mode $1, connections $2, result file $3 (key=value lines).
measure() {
    local mode=$1 conns=$2 out=$3 dir before after rc=0
    dir=$WORK/$mode-$conns-$(basename "$out")
    start_mlrelay "$mode" "$dir"
    run_bounded 30 wrk -t1 -c"$conns" -d2s -s "$LUA" "http://127.0.0.1:$MLR_PORT/" >/dev/null 2>&1 ||
        true # warm-up
    before=$(proc_cpu "$MLR_PID")
    run_bounded $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s -s "$LUA" \
        "http://127.0.0.1:$MLR_PORT/" >"$out" 2>&1 || rc=$?
    after=$(proc_cpu "$MLR_PID")
    stop_pid "$MLR_PID"
    if [ "$rc" != 0 ] || ! grep -q '^rps=' "$out"; then
        log "wrk failed ($mode, $conns connections):"
        cat "$out" >&2
        return 1
    fi
    local requests lines
    requests=$(sed -n 's/^requests=//p' "$out")
    lines=$(grep -c '"comp":"access"\| access: request ' "$dir/server.log" || true)
    awk -v a="$before" -v b="$after" -v n="$requests" -v l="$lines" \
        'BEGIN { printf "cpu_us_per_req=%.2f\nlog_lines=%d\n", (b - a) * 1e6 / n, l }' >>"$out"
    rm -rf "$dir"
}

val() { sed -n "s/^$1=//p" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

log "== access-log benchmark: $(nproc) cores, $("$BIN" --version | head -1), wrk -t1, ${DURATION}s per measurement, $RUNS run(s)"
for run in $(seq "$RUNS"); do
    printf '\nrun %d/%d\n%-6s %6s %10s %9s %9s %14s %10s\n' "$run" "$RUNS" mode conns "req/s" \
        "p50 ms" "p99 ms" "cpu us/req" "log lines"
    for conns in $CONN_LIST; do
        for mode in $MODES; do
            f=$WORK/$mode-$conns-run$run
            measure "$mode" "$conns" "$f"
            printf '%-6s %6s %10s %9.3f %9.3f %14s %10s\n' "$mode" "$conns" "$(val rps "$f")" \
                "$(awk -v u="$(val p50_us "$f")" 'BEGIN { print u / 1000 }')" \
                "$(awk -v u="$(val p99_us "$f")" 'BEGIN { print u / 1000 }')" \
                "$(val cpu_us_per_req "$f")" "$(val log_lines "$f")"
        done
    done
done

printf '\nsummary (median of %d run(s))\n%-6s %6s %10s %9s %9s %14s %16s\n' "$RUNS" mode conns \
    "req/s" "p50 ms" "p99 ms" "cpu us/req" "added us/req"
for conns in $CONN_LIST; do
    base=""
    for mode in $MODES; do
        rps=() p50=() p99=() cpu=()
        for run in $(seq "$RUNS"); do
            f=$WORK/$mode-$conns-run$run
            rps+=("$(val rps "$f")"); p50+=("$(val p50_us "$f")"); p99+=("$(val p99_us "$f")")
            cpu+=("$(val cpu_us_per_req "$f")")
        done
        c=$(median "${cpu[@]}")
        [ "$mode" = off ] && base=$c
        printf '%-6s %6s %10s %9.3f %9.3f %14s %16s\n' "$mode" "$conns" "$(median "${rps[@]}")" \
            "$(awk -v u="$(median "${p50[@]}")" 'BEGIN { print u / 1000 }')" \
            "$(awk -v u="$(median "${p99[@]}")" 'BEGIN { print u / 1000 }')" "$c" \
            "$(awk -v c="$c" -v b="$base" 'BEGIN { printf "%+.2f", c - b }')"
    done
done
