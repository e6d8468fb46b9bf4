-- wrk script of the fault report's overload scenario (bench/faults.py):
--   wrk ... -s bench/wrk_status.lua <url> -- <json body>
-- POSTs the body on every request, counts the answers by status (and refusals without Retry-After) in each thread,
-- and done() prints one line, `WRK_STATUS {...}`, with the counts, wrk's error classes and latency percentiles (ms).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.body = args[1]
  wrk.headers["Content-Type"] = "application/json"
  s200, s429, s503, s504, s5xx, sother, no_retry_after = 0, 0, 0, 0, 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 429 or status == 503 then
    if status == 429 then s429 = s429 + 1 else s503 = s503 + 1 end
    if headers["Retry-After"] == nil and headers["retry-after"] == nil then no_retry_after = no_retry_after + 1 end
  elseif status == 504 then s504 = s504 + 1
  elseif status >= 500 then s5xx = s5xx + 1
  else sother = sother + 1 end
end

function done(summary, latency, requests)
  local t = { s200 = 0, s429 = 0, s503 = 0, s504 = 0, s5xx = 0, sother = 0, no_retry_after = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_STATUS {"requests":%d,"duration_us":%d,"status":{"200":%d,"429":%d,"503":%d,"504":%d,"other_5xx":%d,' ..
    '"other":%d},"refused_without_retry_after":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_ms":{"p50":%.1f,"p99":%.1f,"max":%.1f}}\n',
    summary.requests, summary.duration, t.s200, t.s429, t.s503, t.s504, t.s5xx, t.sother, t.no_retry_after,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
