#!/usr/bin/env bash
# Predict benchmark (issue 5, point 6): mlrelay's predict path against a direct call and nginx.
#
# Usage: bench/predict.sh [-d SECONDS] [-c "CONNS..."] [-r RUNS] [-P PARTS] [-t WRK_THREADS]
#                         [-W PROXY_WORKERS] [-N CONCURRENT] [-D DELAY_MS] [-n] [-p] [-k]
#   -d  wrk seconds per measurement (default 10)
#   -c  wrk connection counts for parts a-c (default "1 16 64")
#   -r  runs; each run measures every part anew, on fresh processes (default 1)
#   -P  parts to run, any of a b c d (default abcd; a, b and c always run together)
#   -t  wrk threads (default 1: on a 2-core machine a second wrk thread takes CPU from the servers)
#   -W  worker_processes of the nginx reverse proxy of part b (default 1, like mlrelay's one loop)
#   -N  concurrent predicts of part d (default 10000)
#   -D  answer delay of part d's slow upstream, milliseconds (default 1000)
#   -n  do not (re)build build-rel/mlrelay; use it as it is (or $MLRELAY_BIN)
#   -p  profile mlrelay with `perf record` in extra passes that are not used for the figures
#       (part c at the highest connection count; one more part d burst) and print its top
#       symbols, functions with callees and threads
#   -k  keep the temporary directory (configs, logs, perf data) and print where it is
# Environment: MLRELAY_BIN (default build-rel/mlrelay), BENCH_TMPDIR (default /var/tmp).
#
# Parts a-c share one upstream: nginx on 127.0.0.1 (its own config in the temporary directory,
# one worker) answering every POST with a static OpenAI chat completion. wrk (keep-alive, POST
# through bench/predict.lua) measures for each connection count, interleaved:
#   (a) direct: POST /v1/chat/completions with an OpenAI chat body to the upstream;
#   (b) nginx-proxy: the same through a second nginx, a reverse proxy with upstream keep-alive
#       (proxy_http_version 1.1, keepalive 64);
#   (c) mlrelay: POST /_plugins/_ml/models/<id>/_predict; the connector renders the same chat
#       body and mlrelay wraps the answer into inference_results.
# Reported: requests/s, p50/p99 latency, non-2xx/socket errors, and the CPU the proxying layer
# (nginx proxy workers, mlrelay) spent per request; the ratio of mlrelay's throughput to the
# proxy's, and the p50 latency each layer adds over the direct call at one connection.
# Targets: mlrelay >= 0.8x nginx-proxy's requests/s; p50 added latency <= 0.2 ms at 1 connection.
#
# Part d: a fresh mlrelay (http.max_connections raised above N through --config) in front of a
# slow upstream (`predict_load upstream`, answers after DELAY_MS), N client connections opened
# first, then N predicts written at once (`predict_load burst`). Reported: how many succeeded,
# the time from the first request written until the last answer, and mlrelay's peak RSS (VmHWM).
# Targets: all N succeed within 3 s; peak RSS <= 256 MB. Each of the N predicts holds a client
# connection and an upstream connection in mlrelay, so it needs about 2N file descriptors: the
# script raises `ulimit -n` as far as it may and warns when that is not enough.
#
# The script exits 0 when the measurements were made (whether or not the targets are met), 1
# otherwise. It only uses 127.0.0.1, stops by itself, and kills what it started and removes its
# temporary directory on every exit path.
set -euo pipefail

DURATION=10
CONN_LIST="1 16 64"
RUNS=1
PARTS=abcd
WRK_THREADS=1
PROXY_WORKERS=1
BURST_N=10000
DELAY_MS=1000
BUILD=1
PERF=0
KEEP=0
while getopts "d:c:r:P:t:W:N:D:npkh" opt; do
    case "$opt" in
    d) DURATION=$OPTARG ;;
    c) CONN_LIST=$OPTARG ;;
    r) RUNS=$OPTARG ;;
    P) PARTS=$OPTARG ;;
    t) WRK_THREADS=$OPTARG ;;
    W) PROXY_WORKERS=$OPTARG ;;
    N) BURST_N=$OPTARG ;;
    D) DELAY_MS=$OPTARG ;;
    n) BUILD=0 ;;
    p) PERF=1 ;;
    k) KEEP=1 ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
    esac
done
for v in "$DURATION" $CONN_LIST "$RUNS" "$WRK_THREADS" "$PROXY_WORKERS" "$BURST_N"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "predict.sh: numbers must be positive integers" >&2; exit 2; }
done
[[ "$DELAY_MS" =~ ^[0-9]+$ ]] || { echo "predict.sh: -D must be a number of milliseconds" >&2; exit 2; }
[[ "$PARTS" =~ ^[abcd]+$ ]] || { echo "predict.sh: -P takes letters among a b c d" >&2; exit 2; }
RUN_ABC=0 RUN_D=0
[[ "$PARTS" == *[abc]* ]] && RUN_ABC=1
[[ "$PARTS" == *d* ]] && RUN_D=1
# The highest connection count: used for the warm-up and the profiling pass.
# shellcheck disable=SC2086 # a list of numbers
MAX_CONNS=$(printf '%s\n' $CONN_LIST | sort -n | tail -1)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${MLRELAY_BIN:-$ROOT/build-rel/mlrelay}

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# Waits until 127.0.0.1:$1 accepts connections (process $2 must stay alive); 10 s at most.
wait_port() {
    local _
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Dependencies: the build's (scripts/install-deps), plus wrk and nginx for parts a-c.
need_pkgs=()
command -v curl >/dev/null || need_pkgs+=(curl)
command -v cc >/dev/null || need_pkgs+=(build-essential)
if [ "$RUN_ABC" = 1 ]; then
    command -v wrk >/dev/null || need_pkgs+=(wrk)
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
fi
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then need_pkgs+=(linux-perf); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "== installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && \
          $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "$BUILD" = 1 ] && [ -z "${MLRELAY_BIN:-}" ]; then
    log "== building build-rel/mlrelay (RelWithDebInfo)"
    ./scripts/install-deps
    cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLR_TESTS=OFF >/dev/null
    cmake --build build-rel -j"$(nproc)" >/dev/null
fi
[ -x "$BIN" ] || { log "predict.sh: no mlrelay binary at $BIN (drop -n to build it)"; exit 1; }

# Part d holds ~2N descriptors in mlrelay (client + upstream connection per predict), N in the
# load generator and N in the upstream. Raise the limit for everything started from here.
FD_WANT=$((2 * BURST_N + 1000))
if [ "$RUN_D" = 1 ] && [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$FD_WANT" ]; then
    ulimit -Hn "$FD_WANT" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/mlrelay-predict.XXXXXX")
chmod 755 "$WORK" # nginx workers may run as another user
cc -O2 -Wall -o "$WORK/predict_load" "$ROOT/bench/predict_load.c"
PL=$WORK/predict_load
LUA=$ROOT/bench/predict.lua

# The upstream's answer: an OpenAI chat completion (no quotes or backslashes that nginx's
# `return` would need escaped).
COMPLETION='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
printf '%s\n' "$COMPLETION" >"$WORK/completion.json"
CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
PREDICT_BODY='{"parameters":{"messages":[{"role":"user","content":"hello"}]}}'

# Reads key=value lines of file $2 into the associative array named $1.
read_kv() {
    local -n _arr=$1
    local k v
    _arr=()
    # shellcheck disable=SC2004 # an associative array, not arithmetic
    while IFS='=' read -r k v; do [ -n "$k" ] && _arr[$k]=$v; done < <(grep -E '^[a-z0-9_]+=' "$2")
}

# CPU seconds (user + system, all threads) of the processes $@ so far.
proc_cpu() {
    local hz p total=0
    hz=$(getconf CLK_TCK)
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$(awk -v t="$total" -v hz="$hz" '{ sub(/^.*\) /, ""); print t + ($12 + $13) / hz }' "/proc/$p/stat")
    done
    echo "$total"
}

# Per-thread CPU seconds of process $1, as "tid seconds" lines.
thread_cpu() {
    local f hz
    hz=$(getconf CLK_TCK)
    for f in "/proc/$1/task"/*/stat; do
        awk -v t="$(basename "$(dirname "$f")")" -v hz="$hz" \
            '{ sub(/^.*\) /, ""); print t, ($12 + $13) / hz }' "$f" 2>/dev/null || true
    done
}

# Prints the per-thread CPU between two thread_cpu snapshots $2 and $3 of process $1.
print_thread_cpu() {
    join <(sort "$2") <(sort "$3") |
        awk -v main="$1" '{ d = $3 - $2; if (d >= 0.02) printf "%s %.2f%s\n", $1, d, ($1 == main ? " (main: libuv loop)" : "") }' |
        sort -k2 -nr | head -12 | sed 's/^/       tid /' >&2
}

vm_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# nginx: $1 = directory, $2 = the http{} servers; echoes the master's pid. Runs in the
# foreground of its own process (daemon off) so that we own it; workers as nginx decides
# (nobody under root, ourselves otherwise).
NGINX_PID=""
start_nginx() {
    local dir=$1 servers=$2 workers=$3
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    client_body_buffer_size 64k;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
$servers
}
EOF
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}

# mlrelay: $1 = directory, $2 = config file or ""; sets MLR_PID and MLR_PORT.
MLR_PID="" MLR_PORT=""
start_mlrelay() {
    local dir=$1 config=$2
    mkdir -p "$dir"
    local args=(--listen 127.0.0.1:0 --data-dir "$dir/data")
    [ -n "$config" ] && args+=(--config "$config")
    "$BIN" "${args[@]}" 2>"$dir/server.log" </dev/null &
    MLR_PID=$!
    PIDS+=("$MLR_PID")
    MLR_PORT=""
    for _ in $(seq 100); do
        MLR_PORT=$(sed -n 's/.*: listening .*port=\([0-9]*\).*/\1/p' "$dir/server.log" | head -1)
        [ -n "$MLR_PORT" ] && break
        kill -0 "$MLR_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$MLR_PORT" ] || { log "mlrelay did not start:"; cat "$dir/server.log" >&2; return 1; }
}

# Settings, connector (endpoint 127.0.0.1:$2, client_config.max_connection $3), model, deploy,
# one checked predict against mlrelay on port $1; echoes the model id.
setup_model() {
    local port=$1 up_port=$2 maxconn=$3 url body cid tid mid status=""
    url=http://127.0.0.1:$port
    local C=(curl -sS --max-time 10 -H 'Content-Type: application/json')
    body=$("${C[@]}" -XPUT "$url/_cluster/settings" -d \
        '{"persistent":{"plugins.ml_commons.trusted_connector_endpoints_regex":["^http://127\\.0\\.0\\.1:.*$"],"plugins.ml_commons.connector.private_ip_enabled":true}}')
    [[ "$body" == *'"acknowledged":true'* ]] || { log "settings: $body"; return 1; }
    # shellcheck disable=SC2016 # ${parameters.*} and ${credential.*} are the connector's templates
    body=$("${C[@]}" -XPOST "$url/_plugins/_ml/connectors/_create" -d '{"name":"chat","version":1,"protocol":"http",
        "parameters":{"endpoint":"127.0.0.1:'"$up_port"'","model":"gpt-4o-mini"},
        "credential":{"openAI_key":"sk-test"},
        "actions":[{"action_type":"predict","method":"POST","url":"http://${parameters.endpoint}/v1/chat/completions",
                    "headers":{"Authorization":"Bearer ${credential.openAI_key}"},
                    "request_body":"{ \"model\": \"${parameters.model}\", \"messages\": ${parameters.messages} }"}],
        "client_config":{"max_connection":'"$maxconn"'}}')
    cid=$(sed -n 's/.*"connector_id":"\([^"]*\)".*/\1/p' <<<"$body")
    [ -n "$cid" ] || { log "connector: $body"; return 1; }
    body=$("${C[@]}" -XPOST "$url/_plugins/_ml/models/_register" -d \
        '{"name":"chat","function_name":"remote","connector_id":"'"$cid"'"}')
    mid=$(sed -n 's/.*"model_id":"\([^"]*\)".*/\1/p' <<<"$body")
    tid=$(sed -n 's/.*"task_id":"\([^"]*\)".*/\1/p' <<<"$body")
    if [ -z "$mid" ] || [ -z "$tid" ]; then log "register: $body"; return 1; fi
    for _ in $(seq 100); do
        body=$("${C[@]}" "$url/_plugins/_ml/tasks/$tid")
        status=$(sed -n 's/.*"state":"\([A-Z_]*\)".*/\1/p' <<<"$body")
        [ "$status" = COMPLETED ] && break
        [ "$status" = FAILED ] && { log "register task: $body"; return 1; }
        sleep 0.1
    done
    [ "$status" = COMPLETED ] || { log "register task did not complete: $body"; return 1; }
    body=$("${C[@]}" -XPOST "$url/_plugins/_ml/models/$mid/_deploy")
    [[ "$body" == *'"status":"COMPLETED"'* ]] || { log "deploy: $body"; return 1; }
    body=$("${C[@]}" -XPOST "$url/_plugins/_ml/models/$mid/_predict" -d "$PREDICT_BODY")
    [[ "$body" == *'"inference_results"'*'"status_code":200'* ]] || { log "predict: $body"; return 1; }
    echo "$mid"
}

# One wrk measurement: $1 = result file, $2 = connections, $3 = URL, $4 = body; the CPU of the
# processes $5... is measured over it (key cpu_s).
wrk_run() {
    local out=$1 conns=$2 url=$3 body=$4 threads=$WRK_THREADS before after rc=0
    shift 4
    [ "$threads" -gt "$conns" ] && threads=$conns
    before=$(proc_cpu "$@")
    BENCH_BODY=$body run_bounded $((DURATION + 30)) wrk -t"$threads" -c"$conns" -d"${DURATION}s" \
        --timeout 5s -s "$LUA" "$url" >"$out" 2>&1 || rc=$?
    after=$(proc_cpu "$@")
    awk -v a="$before" -v b="$after" 'BEGIN { printf "cpu_s=%.3f\n", b - a }' >>"$out"
    if [ "$rc" != 0 ] || ! grep -q '^rps=' "$out"; then
        log "wrk failed ($url):"
        cat "$out" >&2
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Parts a-c for run $1: results in $WORK/abc-$1/<target>-<conns>.
bench_abc() {
    local run=$1 dir=$WORK/abc-$1 up_port px_port up_pid px_pid mid
    mkdir -p "$dir"
    up_port=$("$PL" freeport)
    start_nginx "$dir/upstream" "    server {
        listen 127.0.0.1:$up_port;
        location / { default_type application/json; return 200 '$COMPLETION'; }
    }" 1
    up_pid=$NGINX_PID
    wait_port "$up_port" "$up_pid" || { log "upstream nginx did not start:"; cat "$dir/upstream/error.log" "$dir/upstream/stderr.log" >&2; return 1; }
    px_port=$("$PL" freeport)
    start_nginx "$dir/proxy" "    upstream model { server 127.0.0.1:$up_port; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$px_port;
        location / {
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }" "$PROXY_WORKERS"
    px_pid=$NGINX_PID
    wait_port "$px_port" "$px_pid" || { log "proxy nginx did not start:"; cat "$dir/proxy/error.log" "$dir/proxy/stderr.log" >&2; return 1; }
    start_mlrelay "$dir/mlrelay" "" || return 1
    mid=$(setup_model "$MLR_PORT" "$up_port" 1000) || return 1
    local up_workers px_workers
    up_workers=$(pgrep -P "$up_pid" | tr '\n' ' ')
    px_workers=$(pgrep -P "$px_pid" | tr '\n' ' ')
    local direct_url=http://127.0.0.1:$up_port/v1/chat/completions
    local proxy_url=http://127.0.0.1:$px_port/v1/chat/completions
    local mlr_url=http://127.0.0.1:$MLR_PORT/_plugins/_ml/models/$mid/_predict

    # Warm-up (connection pools, caches, page faults), not measured.
    local saved=$DURATION
    DURATION=2
    wrk_run "$dir/warm-direct" "$MAX_CONNS" "$direct_url" "$CHAT_BODY" || return 1
    wrk_run "$dir/warm-proxy" "$MAX_CONNS" "$proxy_url" "$CHAT_BODY" || return 1
    wrk_run "$dir/warm-mlrelay" "$MAX_CONNS" "$mlr_url" "$PREDICT_BODY" || return 1
    DURATION=$saved

    local c
    for c in $CONN_LIST; do
        log "-- $c connection(s): direct, nginx-proxy, mlrelay (${DURATION}s each)"
        # shellcheck disable=SC2086 # pid lists
        wrk_run "$dir/direct-$c" "$c" "$direct_url" "$CHAT_BODY" $up_workers || return 1
        # shellcheck disable=SC2086
        wrk_run "$dir/proxy-$c" "$c" "$proxy_url" "$CHAT_BODY" $px_workers || return 1
        thread_cpu "$MLR_PID" >"$dir/mlr-threads-$c.before"
        wrk_run "$dir/mlrelay-$c" "$c" "$mlr_url" "$PREDICT_BODY" "$MLR_PID" || return 1
        thread_cpu "$MLR_PID" >"$dir/mlr-threads-$c.after"
    done
    log "   mlrelay CPU by thread at $MAX_CONNS connections (${DURATION}s):"
    print_thread_cpu "$MLR_PID" "$dir/mlr-threads-$MAX_CONNS.before" "$dir/mlr-threads-$MAX_CONNS.after"

    if [ "$PERF" = 1 ] && [ "$run" = 1 ]; then
        log "-- profiling pass (not measured): mlrelay at $MAX_CONNS connections under perf record"
        perf record -F 499 --call-graph dwarf,16384 -p "$MLR_PID" -o "$dir/perf.data" -- sleep "$DURATION" \
            >/dev/null 2>"$dir/perf.log" &
        local perf_pid=$!
        PIDS+=("$perf_pid")
        wrk_run "$dir/mlrelay-perf" "$MAX_CONNS" "$mlr_url" "$PREDICT_BODY" "$MLR_PID" || true
        wait "$perf_pid" 2>/dev/null || true
        forget "$perf_pid"
        report_perf "$dir/perf.data" "part c, $MAX_CONNS connections"
    fi
    if grep -E ' (ERROR|WARN) ' "$dir/mlrelay/server.log" >/dev/null; then
        log "   mlrelay warnings/errors (first 5):"
        grep -E ' (ERROR|WARN) ' "$dir/mlrelay/server.log" | head -5 | sed 's/^/     /' >&2
    fi
    stop_pid "$MLR_PID"
    stop_pid "$px_pid"
    stop_pid "$up_pid"
}

# Top symbols and threads of a perf recording $1 (label $2).
report_perf() {
    [ -s "$1" ] || { log "   perf: no data"; return 0; }
    log "   perf ($2): top symbols of mlrelay, self time:"
    perf report -i "$1" --stdio --no-children --sort dso,sym -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -25 | sed 's/^/     /' >&2
    log "   perf ($2): functions including callees:"
    perf report -i "$1" --stdio --children --sort sym -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -25 | sed 's/^/     /' >&2
    log "   perf ($2): by thread:"
    perf report -i "$1" --stdio --no-children --sort pid -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -6 | sed 's/^/     /' >&2
}

# Part d for run $1: results in $WORK/d-$1/result. Run "prof" is the profiling pass (-p): the
# same burst under `perf record`, reported apart since the profiler slows mlrelay down.
bench_d() {
    local run=$1 dir=$WORK/d-$1 up_pid up_port mid
    mkdir -p "$dir"
    "$PL" upstream -p 0 -d "$DELAY_MS" -f "$WORK/completion.json" >"$dir/upstream.out" 2>"$dir/upstream.log" &
    up_pid=$!
    PIDS+=("$up_pid")
    up_port=""
    for _ in $(seq 100); do
        up_port=$(sed -n 's/^port=//p' "$dir/upstream.out")
        [ -n "$up_port" ] && break
        sleep 0.1
    done
    [ -n "$up_port" ] || { log "slow upstream did not start:"; cat "$dir/upstream.log" >&2; return 1; }
    local maxc=$((BURST_N + 1000))
    [ "$maxc" -lt 20000 ] && maxc=20000
    printf '{"http.max_connections": %d}\n' "$maxc" >"$dir/config.json"
    start_mlrelay "$dir/mlrelay" "$dir/config.json" || return 1
    mid=$(setup_model "$MLR_PORT" "$up_port" "$maxc") || return 1
    local rss0 hwm0 perf_pid=""
    rss0=$(vm_kb "$MLR_PID" VmRSS)
    hwm0=$(vm_kb "$MLR_PID" VmHWM)
    thread_cpu "$MLR_PID" >"$dir/threads.before"
    kill -USR1 "$up_pid" # count only the burst's requests (not setup_model's check)
    if [ "$run" = prof ]; then
        perf record -F 499 --call-graph dwarf,16384 -p "$MLR_PID" -o "$dir/perf.data" \
            -- sleep $((DELAY_MS / 1000 + 15)) >/dev/null 2>"$dir/perf.log" &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    log "-- $BURST_N connections to mlrelay, then $BURST_N predicts at once; upstream answers after ${DELAY_MS} ms${perf_pid:+ (under perf record: not counted)}"
    local rc=0
    run_bounded 150 "$PL" burst -p "$MLR_PORT" -u "/_plugins/_ml/models/$mid/_predict" \
        -b "$PREDICT_BODY" -n "$BURST_N" -t 60 >"$dir/result" 2>"$dir/burst.log" || rc=$?
    sed 's/^/   /' "$dir/burst.log" >&2
    {
        echo "vm_hwm_kb=$(vm_kb "$MLR_PID" VmHWM)"
        echo "vm_rss_kb=$(vm_kb "$MLR_PID" VmRSS)"
        echo "vm_rss_before_kb=$rss0"
        echo "vm_hwm_before_kb=$hwm0"
        echo "threads=$(find "/proc/$MLR_PID/task" -mindepth 1 -maxdepth 1 | wc -l)"
    } >>"$dir/result"
    thread_cpu "$MLR_PID" >"$dir/threads.after"
    log "   mlrelay CPU by thread during the burst:"
    print_thread_cpu "$MLR_PID" "$dir/threads.before" "$dir/threads.after"
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" 2>/dev/null || true
        forget "$perf_pid"
    fi
    if grep -E ' (ERROR|WARN) ' "$dir/mlrelay/server.log" >/dev/null; then
        log "   mlrelay warnings/errors ($(grep -cE ' (ERROR|WARN) ' "$dir/mlrelay/server.log") lines, first 5):"
        grep -E ' (ERROR|WARN) ' "$dir/mlrelay/server.log" | head -5 | sed 's/^/     /' >&2
    fi
    stop_pid "$MLR_PID"
    stop_pid "$up_pid"
    sed 's/^/upstream_/' "$dir/upstream.out" | grep -v '^upstream_port=' >>"$dir/result"
    [ -n "$perf_pid" ] && report_perf "$dir/perf.data" "part d, $BURST_N predicts"
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
verdict_ge() { awk -v v="$1" -v t="$2" 'BEGIN { print (v >= t ? "MET" : "NOT MET") }'; }
verdict_le() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t ? "MET" : "NOT MET") }'; }

log "== mlrelay predict benchmark: $(nproc) cores, $("$BIN" --version 2>&1 | head -1), wrk -t$WRK_THREADS, ${DURATION}s per measurement"
[ "$RUN_ABC" = 1 ] && log "   $("$NGINX" -v 2>&1), proxy worker_processes $PROXY_WORKERS, upstream worker_processes 1"
if [ "$RUN_D" = 1 ] && [ "$FD_LIMIT" != unlimited ] && [ "$FD_LIMIT" -lt $((2 * BURST_N + 64)) ]; then
    log "WARNING: open files limit is $FD_LIMIT and cannot be raised here (no CAP_SYS_RESOURCE);"
    log "         part d needs about $((2 * BURST_N + 64)) in mlrelay (a client and an upstream"
    log "         connection per predict), so some of the $BURST_N predicts will fail for lack of"
    log "         descriptors. Run as root with a higher hard limit, or lower -N."
fi

declare -A R RES RATIO
for run in $(seq "$RUNS"); do
    log ""
    log "== run $run/$RUNS"
    if [ "$RUN_ABC" = 1 ]; then
        bench_abc "$run" || { log "parts a-c failed"; exit 1; }
        printf '\nrun %d/%d, parts a-c (wrk -t%s, %ss, POST, keep-alive)\n' "$run" "$RUNS" "$WRK_THREADS" "$DURATION"
        printf '  %5s  %-12s %10s %9s %9s %9s %7s %14s\n' conns target 'req/s' 'p50 ms' 'p90 ms' 'p99 ms' errors 'layer CPU/req'
        for c in $CONN_LIST; do
            for t in direct proxy mlrelay; do
                read_kv R "$WORK/abc-$run/$t-$c"
                errs=$((R[err_connect] + R[err_read] + R[err_write] + R[err_status] + R[err_timeout]))
                name=$t; [ "$t" = proxy ] && name=nginx-proxy
                cpu_req=$(awk -v s="${R[cpu_s]}" -v n="${R[requests]}" 'BEGIN { printf "%.1f us", (n > 0 ? s * 1e6 / n : 0) }')
                printf '  %5s  %-12s %10.0f %9s %9s %9s %7s %14s\n' "$c" "$name" "${R[rps]}" \
                    "$(ms "${R[p50_us]}")" "$(ms "${R[p90_us]}")" "$(ms "${R[p99_us]}")" "$errs" "$cpu_req"
                RES[$run,$t,$c,rps]=${R[rps]}
                RES[$run,$t,$c,p50]=${R[p50_us]}
                RES[$run,$t,$c,p99]=${R[p99_us]}
                RES[$run,$t,$c,errs]=$errs
            done
            printf '  %5s  ratio mlrelay/nginx-proxy req/s %.2fx; p50 added over direct: mlrelay %+.3f ms, nginx-proxy %+.3f ms\n' "$c" \
                "$(awk -v a="${RES[$run,mlrelay,$c,rps]}" -v b="${RES[$run,proxy,$c,rps]}" 'BEGIN { print a / b }')" \
                "$(awk -v a="${RES[$run,mlrelay,$c,p50]}" -v b="${RES[$run,direct,$c,p50]}" 'BEGIN { print (a - b) / 1000 }')" \
                "$(awk -v a="${RES[$run,proxy,$c,p50]}" -v b="${RES[$run,direct,$c,p50]}" 'BEGIN { print (a - b) / 1000 }')"
        done
        echo "  (layer CPU/req: CPU of the upstream nginx worker for direct, of the proxy's workers for"
        echo "   nginx-proxy, of the whole mlrelay process for mlrelay, divided by the requests served)"
    fi
    if [ "$RUN_D" = 1 ]; then
        bench_d "$run" || { log "part d failed"; cat "$WORK/d-$run/result" >&2 || true; exit 1; }
        read_kv R "$WORK/d-$run/result"
        printf '\nrun %d/%d, part d (%s predicts at once, upstream answers after %s ms)\n' "$run" "$RUNS" "$BURST_N" "$DELAY_MS"
        printf '  succeeded (200 + inference_results)  %6s of %s   (%s within 3 s)\n' "${R[ok]}" "${R[requested]}" "${R[ok_within_3s]}"
        printf '  failures                             connect %s, closed before sending %s, 4xx %s (429: %s), 5xx %s, other %s,\n' \
            "${R[connect_failed]}" "${R[closed_before_send]}" "${R[s4xx]}" "${R[s429]}" "${R[s5xx]}" "${R[sother]}"
        printf '                                       closed without answer %s, unreadable %s, no answer in 60 s %s\n' \
            "${R[closed_without_answer]}" "${R[unreadable]}" "${R[no_answer_in_time]}"
        printf '  connections opened in                %6.2f s before firing; all %s requests written in %.1f ms\n' \
            "${R[connect_s]}" "${R[sent]}" "${R[fire_ms]}"
        printf '  answer times after firing (ms)       first %.0f  p50 %.0f  p90 %.0f  p99 %.0f  last %.0f  (last success %.0f)\n' \
            "${R[first_ms]}" "${R[p50_ms]}" "${R[p90_ms]}" "${R[p99_ms]}" "${R[last_ms]}" "${R[last_ok_ms]}"
        printf '  mlrelay peak RSS (VmHWM)             %6.1f MB   (%.1f MB before the burst, %.1f MB resident after; %s threads)\n' \
            "$(awk -v k="${R[vm_hwm_kb]}" 'BEGIN { print k / 1024 }')" "$(awk -v k="${R[vm_hwm_before_kb]}" 'BEGIN { print k / 1024 }')" \
            "$(awk -v k="${R[vm_rss_kb]}" 'BEGIN { print k / 1024 }')" "${R[threads]}"
        printf '  slow upstream                        %s requests, %s connections accepted, at most %s open at once\n' \
            "${R[upstream_requests]:-?}" "${R[upstream_accepted]:-?}" "${R[upstream_max_open]:-?}"
        if [ -n "${R[upstream_first_req_mono]:-}" ] && [ "${R[upstream_requests]:-0}" -gt 0 ]; then
            printf '  requests reached the upstream        from %.0f ms to %.0f ms after firing (same clock)\n' \
                "$(awk -v a="${R[upstream_first_req_mono]}" -v t="${R[t0_mono]}" 'BEGIN { print (a - t) * 1000 }')" \
                "$(awk -v a="${R[upstream_last_req_mono]}" -v t="${R[t0_mono]}" 'BEGIN { print (a - t) * 1000 }')"
        fi
        printf '  listen queue overflows (all sockets) %s while connecting, %s while answering\n' \
            "${R[listen_overflows_connecting]}" "${R[listen_overflows_answering]}"
        RES[$run,d,ok]=${R[ok]}
        RES[$run,d,last]=${R[last_ms]}
        RES[$run,d,within3]=${R[ok_within_3s]}
        RES[$run,d,hwm]=$(awk -v k="${R[vm_hwm_kb]}" 'BEGIN { print k / 1024 }')
    fi
done

if [ "$RUN_D" = 1 ] && [ "$PERF" = 1 ]; then
    log ""
    log "== profiling pass of part d (not counted)"
    bench_d prof || log "profiling pass of part d failed"
    if [ -s "$WORK/d-prof/result" ]; then
        read_kv R "$WORK/d-prof/result"
        log "   under perf: ${R[ok]} of ${R[requested]} succeeded, last answer after ${R[last_ms]} ms"
    fi
fi

# ---------------------------------------------------------------------------------------------
printf '\nsummary (median of %d run(s); %d cores; wrk -t%s, %ss per measurement)\n' "$RUNS" "$(nproc)" "$WRK_THREADS" "$DURATION"
if [ "$RUN_ABC" = 1 ]; then
    printf '  %5s  %12s %12s %12s %10s %14s %14s\n' conns 'direct r/s' 'proxy r/s' 'mlrelay r/s' 'mlr/proxy' 'mlr p50 added' 'proxy p50 add'
    for c in $CONN_LIST; do
        v=() ; for run in $(seq "$RUNS"); do v+=("${RES[$run,direct,$c,rps]}"); done; d_rps=$(median "${v[@]}")
        v=() ; for run in $(seq "$RUNS"); do v+=("${RES[$run,proxy,$c,rps]}"); done; p_rps=$(median "${v[@]}")
        v=() ; for run in $(seq "$RUNS"); do v+=("${RES[$run,mlrelay,$c,rps]}"); done; m_rps=$(median "${v[@]}")
        v=() ; for run in $(seq "$RUNS"); do v+=("$(awk -v a="${RES[$run,mlrelay,$c,rps]}" -v b="${RES[$run,proxy,$c,rps]}" 'BEGIN { print a / b }')"); done
        ratio=$(median "${v[@]}")
        v=() ; for run in $(seq "$RUNS"); do v+=("$(awk -v a="${RES[$run,mlrelay,$c,p50]}" -v b="${RES[$run,direct,$c,p50]}" 'BEGIN { print (a - b) / 1000 }')"); done
        m_add=$(median "${v[@]}")
        v=() ; for run in $(seq "$RUNS"); do v+=("$(awk -v a="${RES[$run,proxy,$c,p50]}" -v b="${RES[$run,direct,$c,p50]}" 'BEGIN { print (a - b) / 1000 }')"); done
        p_add=$(median "${v[@]}")
        printf '  %5s  %12.0f %12.0f %12.0f %9.2fx %11.3f ms %11.3f ms\n' "$c" "$d_rps" "$p_rps" "$m_rps" "$ratio" "$m_add" "$p_add"
        RATIO[$c]=$ratio
        [ "$c" = 1 ] && ADD1=$m_add
    done
    for c in $CONN_LIST; do
        printf '  throughput mlrelay/nginx-proxy at %3s conn(s)  %6.2fx   target >= 0.8x: %s\n' "$c" "${RATIO[$c]}" "$(verdict_ge "${RATIO[$c]}" 0.8)"
    done
    if [ -n "${ADD1:-}" ]; then
        printf '  p50 added by mlrelay over direct, 1 conn       %6.3f ms target <= 0.2 ms: %s\n' "$ADD1" "$(verdict_le "$ADD1" 0.2)"
    fi
fi
if [ "$RUN_D" = 1 ]; then
    v=(); for run in $(seq "$RUNS"); do v+=("${RES[$run,d,within3]}"); done; within3=$(median "${v[@]}")
    v=(); for run in $(seq "$RUNS"); do v+=("${RES[$run,d,last]}"); done; last=$(median "${v[@]}")
    v=(); for run in $(seq "$RUNS"); do v+=("${RES[$run,d,hwm]}"); done; hwm=$(median "${v[@]}")
    v=(); for run in $(seq "$RUNS"); do v+=("${RES[$run,d,ok]}"); done; ok=$(median "${v[@]}")
    all_ok=$([ "$within3" = "$BURST_N" ] && echo MET || echo "NOT MET")
    printf '  part d: %s of %s predicts succeeded, %s within 3 s; last answer after %.0f ms   target all within 3 s: %s\n' \
        "$ok" "$BURST_N" "$within3" "$last" "$all_ok"
    printf '  part d: mlrelay peak RSS %.1f MB                                   target <= 256 MB: %s\n' "$hwm" "$(verdict_le "$hwm" 256)"
    if [ "$FD_LIMIT" != unlimited ] && [ "$FD_LIMIT" -lt $((2 * BURST_N + 64)) ]; then
        printf '  (open files limit %s < %s needed: see the warning at the top)\n' "$FD_LIMIT" $((2 * BURST_N + 64))
    fi
fi
