#!/usr/bin/env bash
# Task-queue throughput benchmark (issue 4, point 6): mlrelay against beanstalkd, both durable.
#
# Usage: bench/tasks.sh [-c CONNS] [-d SECONDS] [-r RUNS] [-w WORKER_THREADS] [-n] [-p] [-k]
#   -c  client connections, for both servers (default 64)
#   -d  load seconds per measurement (default 10)
#   -r  runs; each run measures mlrelay then beanstalkd on fresh data dirs (default 1)
#   -w  mlrelay's workers.threads (default: the server's own default)
#   -n  do not (re)build build-rel/mlrelay; use it as it is (or $MLRELAY_BIN)
#   -p  profile mlrelay with `perf record` during its load phase and print the top symbols
#   -k  keep the temporary directory (data dirs, logs, perf data) and print where it is
# Environment: MLRELAY_BIN (default build-rel/mlrelay), BENCH_TMPDIR (default /var/tmp: it must
# be a real disk, since a tmpfs makes fsync free).
#
# mlrelay: a fresh data dir (synchronous=FULL is built in), the trusted-endpoint setting, one
# connector and one model group; then CONNS keep-alive clients POST
# /_plugins/_ml/models/_register back to back for SECONDS (each creates a model row, bumps the
# group's version and enqueues a REGISTER_MODEL task). Reported: acknowledged registers/s, p50/p99
# submit latency, and end-to-end durable tasks/s = acknowledged tasks / time from the first
# request until the last of them is COMPLETED (the CREATED+RUNNING backlog is polled through
# POST /_plugins/_ml/tasks/_search once the load stops).
#
# beanstalkd: `beanstalkd -l 127.0.0.1 -p PORT -b DIR -f 0` (binlog fsync after every write);
# CONNS connections each run put + reserve + delete cycles of a job as large as the register body
# for SECONDS. Reported: completed cycles/s (durable jobs/s).
#
# Targets: >= 10,000 durable tasks/s end-to-end, and >= 2x beanstalkd's durable rate. The script
# exits 0 when the measurements were made (whether or not the targets are met), 1 otherwise. It
# only uses 127.0.0.1, stops by itself, and kills what it started and removes its temporary
# directory on every exit path.
set -euo pipefail

CONNS=64
DURATION=10
RUNS=1
WORKERS=""
BUILD=1
PERF=0
KEEP=0
while getopts "c:d:r:w:npkh" opt; do
    case "$opt" in
    c) CONNS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    w) WORKERS=$OPTARG ;;
    n) BUILD=0 ;;
    p) PERF=1 ;;
    k) KEEP=1 ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
for v in "$CONNS" "$DURATION" "$RUNS" ${WORKERS:+"$WORKERS"}; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "tasks.sh: numbers must be positive integers" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${MLRELAY_BIN:-$ROOT/build-rel/mlrelay}

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------------------------------------
# Dependencies: the build's (scripts/install-deps), plus beanstalkd for the comparison.
need_pkgs=()
command -v beanstalkd >/dev/null || need_pkgs+=(beanstalkd)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v cc >/dev/null || need_pkgs+=(build-essential)
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then need_pkgs+=(linux-perf); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "== installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && \
          $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi

if [ "$BUILD" = 1 ] && [ -z "${MLRELAY_BIN:-}" ]; then
    log "== building build-rel/mlrelay (RelWithDebInfo)"
    ./scripts/install-deps
    cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLR_TESTS=OFF >/dev/null
    cmake --build build-rel -j"$(nproc)" >/dev/null
fi
[ -x "$BIN" ] || { log "tasks.sh: no mlrelay binary at $BIN (drop -n to build it)"; exit 1; }

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/mlrelay-bench.XXXXXX")
fstype=$(stat -f -c %T "$WORK")
if [ "$fstype" = tmpfs ] || [ "$fstype" = ramfs ]; then
    log "WARNING: $WORK is on $fstype: fsync costs nothing there, so neither figure is durable;"
    log "         set BENCH_TMPDIR to a directory on a real disk."
fi
cc -O2 -Wall -o "$WORK/loadgen" "$ROOT/bench/loadgen.c"
LOADGEN=$WORK/loadgen

# Reads key=value lines of file $2 into the associative array named $1.
declare -A M B
read_kv() {
    local -n _arr=$1
    local k v
    _arr=()
    # shellcheck disable=SC2004 # an associative array, not arithmetic
    while IFS='=' read -r k v; do [ -n "$k" ] && _arr[$k]=$v; done <"$2"
}

# Per-thread CPU seconds (utime+stime) of process $1, as "tid seconds" lines.
thread_cpu() {
    local f hz
    hz=$(getconf CLK_TCK)
    for f in "/proc/$1/task"/*/stat; do
        awk -v t="$(basename "$(dirname "$f")")" -v hz="$hz" \
            '{ sub(/^.*\) /, ""); print t, ($12 + $13) / hz }' "$f" 2>/dev/null || true
    done
}

# ---------------------------------------------------------------------------------------------
# One mlrelay measurement (run $1): key=value results in $WORK/mlr-$1/result.
bench_mlrelay() {
    local run=$1 dir=$WORK/mlr-$1 port pid url gid cid body
    mkdir -p "$dir"
    local args=(--listen 127.0.0.1:0 --data-dir "$dir/data")
    if [ -n "$WORKERS" ]; then
        printf '{"workers.threads": %s}\n' "$WORKERS" >"$dir/config.json"
        args+=(--config "$dir/config.json")
    fi
    "$BIN" "${args[@]}" 2>"$dir/server.log" &
    pid=$!
    PIDS+=("$pid")
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*: listening .*port=\([0-9]*\).*/\1/p' "$dir/server.log" | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { log "mlrelay did not start:"; cat "$dir/server.log" >&2; return 1; }
    # Threads that exist once it listens, before any request: the loop and the store writer
    # (libuv's pool starts with the first request).
    ls "/proc/$pid/task" >"$dir/threads.start"
    url=http://127.0.0.1:$port
    local C=(curl -sS --max-time 10 -H 'Content-Type: application/json')
    body=$("${C[@]}" -XPUT "$url/_cluster/settings" -d \
        '{"persistent":{"plugins.ml_commons.trusted_connector_endpoints_regex":["^http://127\\.0\\.0\\.1:.*$"]}}')
    [[ "$body" == *'"acknowledged":true'* ]] || { log "settings: $body"; return 1; }
    # shellcheck disable=SC2016 # ${parameters.endpoint} is the connector's template, not shell
    body=$("${C[@]}" -XPOST "$url/_plugins/_ml/connectors/_create" -d \
        '{"name":"c","version":1,"protocol":"http","parameters":{"endpoint":"127.0.0.1:9"},"credential":{"k":"v"},"actions":[{"action_type":"predict","method":"POST","url":"http://${parameters.endpoint}/x"}]}')
    cid=$(sed -n 's/.*"connector_id":"\([^"]*\)".*/\1/p' <<<"$body")
    [ -n "$cid" ] || { log "connector: $body"; return 1; }
    body=$("${C[@]}" -XPOST "$url/_plugins/_ml/model_groups/_register" -d '{"name":"bench"}')
    gid=$(sed -n 's/.*"model_group_id":"\([^"]*\)".*/\1/p' <<<"$body")
    [ -n "$gid" ] || { log "model group: $body"; return 1; }

    local perf_pid=""
    if [ "$PERF" = 1 ]; then
        perf record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$dir/perf.data" \
            -- sleep "$DURATION" \
            >/dev/null 2>"$dir/perf.log" &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    thread_cpu "$pid" >"$dir/cpu.before"
    local t_before rc=0
    t_before=$(date +%s.%N)
    log "-- mlrelay: $CONNS connections, ${DURATION}s of POST /_plugins/_ml/models/_register"
    run_bounded $((DURATION + 60 + 120 + 20 * DURATION)) "$LOADGEN" http -p "$port" \
        -c "$CONNS" -d "$DURATION" -g "$gid" -k "$cid" -i 1000 -w $((120 + 20 * DURATION)) \
        >"$dir/result" || rc=$?
    thread_cpu "$pid" >"$dir/cpu.after"
    local wall
    wall=$(awk -v a="$t_before" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" 2>/dev/null || true
        forget "$perf_pid"
    fi
    # Server CPU per thread over the whole measurement (load + drain); the loop thread has the
    # process id as its thread id.
    local writer
    writer=$(grep -vx "$pid" "$dir/threads.start" || true)
    [ "$(wc -w <<<"$writer")" = 1 ] || writer=""
    log "   server CPU seconds by thread over ${wall}s (load + drain):"
    join <(sort "$dir/cpu.before") <(sort "$dir/cpu.after") |
        awk -v main="$pid" -v writer="$writer" '{ d = $3 - $2; if (d >= 0.05) printf "%s %.2f%s\n", $1, d, ($1 == main ? " (libuv loop: HTTP)" : $1 == writer ? " (store writer)" : "") }' |
        sort -k2 -nr | sed 's/^/     tid /' >&2
    if [ -n "$writer" ]; then
        join <(sort "$dir/cpu.before") <(sort "$dir/cpu.after") | awk -v w="$writer" \
            '$1 == w { printf "writer_cpu_s=%.2f\n", $3 - $2 }' >>"$dir/result"
    fi
    stop_pid "$pid"
    if grep -E ' (ERROR|WARN) ' "$dir/server.log" >/dev/null; then
        log "   server warnings/errors (first 5):"
        grep -E ' (ERROR|WARN) ' "$dir/server.log" | head -5 | sed 's/^/     /' >&2
    fi
    if [ -n "$perf_pid" ] && [ -s "$dir/perf.data" ]; then
        log "   perf: top symbols of mlrelay during the load (self time):"
        perf report -i "$dir/perf.data" --stdio --no-children --sort sym -g none 2>/dev/null |
            grep -E '^ +[0-9]' | head -30 | sed 's/^/     /' >&2
        log "   perf: by thread (tid:name):"
        perf report -i "$dir/perf.data" --stdio --no-children --sort pid -g none 2>/dev/null |
            grep -E '^ +[0-9]' | head -8 | sed 's/^/     /' >&2
        log "   perf: store writer thread, functions including callees:"
        perf report -i "$dir/perf.data" --stdio --children --sort sym -g none \
            ${writer:+--tid "$writer"} 2>/dev/null |
            grep -E '^ +[0-9]' | grep -vE '\[k\]|0x0000' | head -40 | sed 's/^/     /' >&2
    fi
    return "$rc"
}

# One beanstalkd measurement (run $1, $2-byte jobs): key=value results in $WORK/bs-$1/result.
bench_beanstalkd() {
    local run=$1 bytes=$2 dir=$WORK/bs-$1 port pid ok=0 rc=0
    mkdir -p "$dir/binlog"
    port=$("$LOADGEN" freeport)
    beanstalkd -l 127.0.0.1 -p "$port" -b "$dir/binlog" -f 0 2>"$dir/server.log" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then ok=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ "$ok" = 1 ] || { log "beanstalkd did not start:"; cat "$dir/server.log" >&2; return 1; }
    log "-- beanstalkd -f 0: $CONNS connections, ${DURATION}s of put + reserve + delete ($bytes-byte jobs)"
    run_bounded $((DURATION + 90)) "$LOADGEN" beanstalk -p "$port" -c "$CONNS" \
        -d "$DURATION" -s "$bytes" >"$dir/result" || rc=$?
    stop_pid "$pid"
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
log "== mlrelay task throughput vs beanstalkd: $(nproc) cores, data on $fstype ($WORK)"
log "   $("$BIN" --version), $(beanstalkd -v 2>&1), workers.threads=${WORKERS:-default}"
e2e_all=() bs_all=() ratio_all=()
for run in $(seq "$RUNS"); do
    log ""
    log "== run $run/$RUNS"
    bench_mlrelay "$run" || { log "mlrelay measurement failed"; cat "$WORK/mlr-$run/result" >&2 || true; exit 1; }
    read_kv M "$WORK/mlr-$run/result"
    bench_beanstalkd "$run" "${M[body_bytes]}" || { log "beanstalkd measurement failed"; exit 1; }
    read_kv B "$WORK/bs-$run/result"
    ratio=$(awk -v a="${M[e2e_rate]}" -v b="${B[cycle_rate]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '\nrun %d/%d\n' "$run" "$RUNS"
    printf '  mlrelay   acknowledged registers/s     %10.0f   (%s in %ss, %s refused; load generator used %ss CPU)\n' \
        "${M[ack_rate]}" "${M[acknowledged]}" "${M[duration_s]}" "${M[refused]}" "${M[client_cpu_s]}"
    printf '  mlrelay   submit latency ms            p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n' \
        "${M[submit_p50_ms]}" "${M[submit_p90_ms]}" "${M[submit_p99_ms]}" "${M[submit_max_ms]}"
    printf '  mlrelay   backlog when load stopped    %10s   drained in %ss; COMPLETED %s, FAILED %s\n' \
        "${M[backlog_at_load_end]}" "${M[drain_s]:-?}" "${M[completed]}" "${M[failed]}"
    printf '  mlrelay   end-to-end durable tasks/s   %10.0f   (%s tasks COMPLETED %ss after the first request)\n' \
        "${M[e2e_rate]}" "${M[acknowledged]}" "${M[e2e_s]}"
    if [ -n "${M[writer_cpu_s]:-}" ]; then
        printf '  mlrelay   store writer thread CPU      %10.0f us per task (%ss in all: register + claim + finish)\n' \
            "$(awk -v c="${M[writer_cpu_s]}" -v n="${M[acknowledged]}" 'BEGIN { print c * 1e6 / n }')" "${M[writer_cpu_s]}"
    fi
    printf '  beanstalkd durable jobs/s (-f 0)       %10.0f   (%s put+reserve+delete cycles, put p50 %.2f ms p99 %.2f ms)\n' \
        "${B[cycle_rate]}" "${B[cycles]}" "${B[put_p50_ms]}" "${B[put_p99_ms]}"
    printf '  ratio mlrelay / beanstalkd             %10sx\n' "$ratio"
    e2e_all+=("${M[e2e_rate]}") bs_all+=("${B[cycle_rate]}") ratio_all+=("$ratio")
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
e2e=$(median "${e2e_all[@]}")
bs=$(median "${bs_all[@]}")
ratio=$(median "${ratio_all[@]}")
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v >= t ? "MET" : "NOT MET") }'; }
printf '\nsummary (median of %d run(s), %d connections, %ss load, synchronous=FULL / -f 0)\n' "$RUNS" "$CONNS" "$DURATION"
printf '  mlrelay end-to-end durable tasks/s   %10.0f   target >= 10000: %s\n' "$e2e" "$(verdict "$e2e" 10000)"
printf '  beanstalkd durable jobs/s            %10.0f\n' "$bs"
printf '  ratio mlrelay / beanstalkd           %10.2fx  target >= 2x: %s\n' "$ratio" "$(verdict "$ratio" 2)"
