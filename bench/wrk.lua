-- wrk script for bench/run's memory and throughput stages: every request is a distinct adm.tools
-- "new" event (the uid counts up per thread), so no request is a resend that would skip the write.
-- The body is the events/new.json body with its uid replaced; bench/local_http.py passes it as a
-- format string after "--".
--   wrk ... -s bench/wrk.lua <url> -- <token> <body format with one %d> <first uid>
-- Each run is given a fresh <first uid>, so no run repeats another's events either.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  token, body_format, first_uid = args[1], args[2], tonumber(args[3])
  sent = 0
  headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "adm.tools mail webhook",
    ["X-Webhook-Token"] = token,
  }
end

function request()
  sent = sent + 1
  return wrk.format("POST", "/", headers, string.format(body_format, first_uid + id * 100000000 + sent))
end

-- The latency distribution as one JSON line (microseconds), for bench/report.py's table and plot.
function done(summary, latency, requests)
  local points = {}
  for _, p in ipairs({ 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97.5, 99, 99.5, 99.9 }) do
    table.insert(points, string.format('"%s":%d', p, latency:percentile(p)))
  end
  -- percentile(100) gives 0 in wrk 4.1; the maximum is what it should say.
  table.insert(points, string.format('"100":%d', latency.max))
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"percentiles_us":{%s}}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, table.concat(points, ",")))
end
