-- wrk script of the fault report's batch_overload scenario (bench/faults.py `wrk_mix_delivery`):
--   wrk -t N -c N ... -s bench/wrk_mix.lua <url> -- <batch clients> <batch path> <batch body file> <batch size>
--       <single path> <single body file>
-- One connection per thread, so each thread is one closed-loop client: the first <batch clients> threads POST the
-- batch body, the others the single one. A client refused with 429/503 waits its Retry-After, stretched by a random
-- 0-50% (as retrying clients should), before it sends again. done() prints one line, `WRK_MIX {...}`: the answers by
-- kind of client and status, refusals without Retry-After, and wrk's error classes.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local nbatch = tonumber(args[1])
  local path, body
  if id < nbatch then
    path, body, size = args[2], slurp(args[3]), tonumber(args[4])
  else
    path, body, size = args[5], slurp(args[6]), 1
  end
  req = wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
  math.randomseed(id + 7)
  next_delay = 0
  ok, refused, no_retry_after, s504, s5xx, sother = 0, 0, 0, 0, 0, 0
end

function request()
  return req
end

function delay()
  return next_delay
end

function response(status, headers, body)
  next_delay = 0
  if status == 200 then
    ok = ok + 1
  elseif status == 429 or status == 503 then
    refused = refused + 1
    local ra = tonumber(headers["Retry-After"] or headers["retry-after"] or "")
    if ra == nil then
      no_retry_after = no_retry_after + 1
      ra = 1
    end
    next_delay = math.floor(ra * 1000 * (1 + math.random() / 2))
  elseif status == 504 then
    s504 = s504 + 1
  elseif status >= 500 then
    s5xx = s5xx + 1
  else
    sother = sother + 1
  end
end

function done(summary, latency, requests)
  local t = { ok_batch = 0, ok_single = 0, refused = 0, no_retry_after = 0, s504 = 0, s5xx = 0, sother = 0 }
  for _, thread in ipairs(threads) do
    local kind = (thread:get("size") == 1) and "ok_single" or "ok_batch"
    t[kind] = t[kind] + thread:get("ok")
    for _, k in ipairs({ "refused", "no_retry_after", "s504", "s5xx", "sother" }) do
      t[k] = t[k] + thread:get(k)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_MIX {"requests":%d,"duration_us":%d,"ok_batch":%d,"ok_single":%d,"refused":%d,"refused_without_retry_after":%d,' ..
    '"504":%d,"other_5xx":%d,"other":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, t.ok_batch, t.ok_single, t.refused, t.no_retry_after, t.s504, t.s5xx,
    t.sother, e.connect, e.read, e.write, e.timeout))
end
