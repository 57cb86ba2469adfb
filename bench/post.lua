-- wrk script for `make bench`: POST a JSON body again and again, and report in JSON.
-- BENCH_BODY: the body; BENCH_KEY: the bearer token (a gateway key, or any token for the simulator).
-- BENCH_VARY set: each request's body has its "{n}" replaced by a number of its own, so no two requests are
-- the same (as real upstream calls are not); otherwise every request sends the same bytes (cache hits).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench")

if os.getenv("BENCH_VARY") then
  local template, n, threads = wrk.body, 0, 0
  setup = function(thread)  -- each wrk thread numbers its requests apart from the others'
    threads = threads + 1
    thread:set("id", threads)
  end
  request = function()
    n = n + 1
    return wrk.format(nil, nil, nil, (template:gsub("{n}", (id or 0) .. "-" .. n)))
  end
end

-- One line bench/run.py reads: latencies in microseconds, counts over the whole run.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
