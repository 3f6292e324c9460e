-- get.lua — wrk script for bench/access_log.sh: every request is a keep-alive GET of the URL
-- given to wrk, with an X-Opaque-Id header (so the access log writes its longest usual line); at
-- the end the results are printed as key=value lines (latencies in microseconds).

wrk.method = "GET"
wrk.headers["X-Opaque-Id"] = "bench-trace-0123456789"

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("requests=%d\n", summary.requests))
    io.write(string.format("rps=%.1f\n", summary.requests / (summary.duration / 1e6)))
    io.write(string.format("errors=%d\n", e.connect + e.read + e.write + e.status + e.timeout))
    io.write(string.format("p50_us=%d\np99_us=%d\n", latency:percentile(50),
        latency:percentile(99)))
end
