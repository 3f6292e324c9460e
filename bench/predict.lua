-- predict.lua — wrk script for bench/predict.sh: every request is a keep-alive POST of the JSON
-- body in the environment variable BENCH_BODY to the path of the URL given to wrk; at the end
-- the results are printed as key=value lines (latencies in microseconds) for the script to read.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("requests=%d\n", summary.requests))
    io.write(string.format("duration_us=%d\n", summary.duration))
    io.write(string.format("rps=%.1f\n", summary.requests / (summary.duration / 1e6)))
    io.write(string.format("err_connect=%d\nerr_read=%d\nerr_write=%d\nerr_status=%d\nerr_timeout=%d\n",
        e.connect, e.read, e.write, e.status, e.timeout))
    io.write(string.format("p50_us=%d\np90_us=%d\np99_us=%d\nmax_us=%d\nmean_us=%.1f\n",
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        latency.mean))
end
