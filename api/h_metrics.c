/*
 * h_metrics.c — `GET /metrics`: every module's counters in the Prometheus text exposition format
 * (version 0.0.4; spec §7). Names start with mlrelay_, counters end in _total, latencies are
 * _seconds histograms. The HTTP families come from http_stats.c, upstream/task/queue families
 * from workers/, the store's from its writer statistics, and the process figures from /proc.
 *
 * A scrape reads counters that the loop thread owns (it runs on it) and the store writer's
 * atomics; it allocates only the response text. Its cost grows with the number of deployed
 * models (capped, see workers_metrics_write()), not with traffic. The scrape itself is counted
 * once answered, so it shows up in the next scrape. Loop thread.
 */
#include "api_int.h"

#define PROMETHEUS_TYPE "text/plain; version=0.0.4; charset=utf-8"

static void write_store(struct store *s, struct mlr_buf *out)
{
    struct store_stats st;
    store_stats_get(s, &st);
    mlr_metrics_family(out, "mlrelay_store_commits_total", "counter",
                       "Transactions committed by the store's writer thread (group commits).");
    mlr_metrics_u64(out, "mlrelay_store_commits_total", NULL, st.commits);
    mlr_metrics_family(out, "mlrelay_store_writes_total", "counter",
                       "Writes carried by those transactions.");
    mlr_metrics_u64(out, "mlrelay_store_writes_total", NULL, st.writes);
    mlr_metrics_family(out, "mlrelay_store_commit_seconds", "histogram",
                       "Time from BEGIN to COMMIT done (fsync included) per transaction.");
    mlr_metrics_histogram(out, "mlrelay_store_commit_seconds", NULL, st.commit_us, 1e6);
    mlr_metrics_family(out, "mlrelay_store_commit_batch_size", "histogram",
                       "Writes per committed transaction.");
    mlr_metrics_histogram(out, "mlrelay_store_commit_batch_size", NULL, st.batch_size, 1);
}

static void write_process(struct mlr_buf *out)
{
    int64_t rss = mlr_process_rss_bytes(), fds = mlr_process_open_fds();
    mlr_metrics_family(out, "mlrelay_process_resident_memory_bytes", "gauge",
                       "Resident set size of the process (/proc/self/statm).");
    mlr_metrics_u64(out, "mlrelay_process_resident_memory_bytes", NULL,
                    (uint64_t)(rss > 0 ? rss : 0));
    mlr_metrics_family(out, "mlrelay_process_open_fds", "gauge",
                       "Open file descriptors of the process (/proc/self/fd).");
    mlr_metrics_u64(out, "mlrelay_process_open_fds", NULL, (uint64_t)(fds > 0 ? fds : 0));
    mlr_metrics_family(out, "mlrelay_build_info", "gauge",
                       "Always 1; the labels say which mlrelay and ML Commons API level run.");
    mlr_metrics_u64(out, "mlrelay_build_info",
                    "version=\"" MLR_VERSION "\",api_level=\"" MLR_API_LEVEL "\"", 1);
}

void api_h_metrics(struct api_req *req)
{
    struct mlr_buf out;
    mlr_buf_init(&out, 0);
    api__http_stats_write(api__server_http_stats(req->srv), api__server_conn_count(req->srv),
                          &out);
    workers_metrics_write(req->ctx->workers, &out);
    write_store(req->ctx->store, &out);
    write_process(&out);
    api__conn_respond_typed(req, 200, PROMETHEUS_TYPE, NULL, &out);
    mlr_buf_cleanup(&out);
}
