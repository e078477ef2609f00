-- Shared by the endpoint scripts (each one dofile()s this first).
--
-- done() writes wrk's summary as one JSON object to $BENCH_OUT, which
-- bench/run.py reads. Non-2xx responses are wrk's own count of statuses
-- >= 400 (summary.errors.status): the benchmarked requests never get a 1xx or
-- 3xx, and leaving response() undefined spares wrk from building a Lua table
-- for every response's headers and body.

function header_from_env(name, variable)
  local value = os.getenv(variable)
  if value and value ~= "" then
    wrk.headers[name] = value
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
  f:close()
end
