-- wrk script for the fraudmesh benchmark.
--   wrk ... -s bench/wrk_report.lua <url> -- [bodies_file] [api_key]
-- With a bodies file (one JSON document per line) every request is a POST of the next body, rotating,
-- each thread starting at a different offset. Without one, wrk sends plain GETs of <url>.
-- done() prints one line, `WRK_JSON {...}`, with the counts, the error classes and latency percentiles
-- (in microseconds) that bench/wrk.py parses.

local reqs = {}
local idx = 0
local thread_no = 0

function setup(thread)
  thread:set("thread_no", thread_no)
  thread_no = thread_no + 1
end

function init(args)
  local path = args[1]
  local headers = { ["Content-Type"] = "application/json" }
  if args[2] and args[2] ~= "" then
    headers["X-API-Key"] = args[2]
  end
  if path and path ~= "" then
    for line in io.lines(path) do
      if #line > 0 then
        reqs[#reqs + 1] = wrk.format("POST", nil, headers, line)
      end
    end
  end
  if #reqs > 0 then
    idx = ((tonumber(thread_no) or 0) * 997) % #reqs
  end
end

function request()
  if #reqs == 0 then
    return wrk.request()
  end
  idx = idx % #reqs + 1
  return reqs[idx]
end

local function num(x)
  return string.format("%.1f", x)
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  parts[#parts + 1] = '"requests":' .. summary.requests
  parts[#parts + 1] = '"duration_us":' .. summary.duration
  parts[#parts + 1] = '"bytes":' .. summary.bytes
  parts[#parts + 1] = string.format(
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
    e.connect, e.read, e.write, e.status, e.timeout)
  local lat = {}
  lat[#lat + 1] = '"min":' .. num(latency.min)
  lat[#lat + 1] = '"max":' .. num(latency.max)
  lat[#lat + 1] = '"mean":' .. num(latency.mean)
  lat[#lat + 1] = '"stdev":' .. num(latency.stdev)
  local ps = {}
  local qs = {}
  for q = 1, 99 do qs[#qs + 1] = q end
  for _, q in ipairs({ 99.5, 99.9, 99.99 }) do qs[#qs + 1] = q end
  for _, q in ipairs(qs) do
    ps[#ps + 1] = string.format('"%g":%s', q, num(latency:percentile(q)))
  end
  lat[#lat + 1] = '"percentiles":{' .. table.concat(ps, ",") .. "}"
  parts[#parts + 1] = '"latency_us":{' .. table.concat(lat, ",") .. "}"
  io.write("WRK_JSON {" .. table.concat(parts, ",") .. "}\n")
end
