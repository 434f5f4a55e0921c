-- wrk script: POST /public/v1/register with pre-generated CSRs and a serial unique
-- to each request. BENCH_KEY and BENCH_CSRS (a file of JSON-escaped CSRs, one per
-- line) come from the environment; scripts/bench-register.sh sets them.
-- BENCH_SERIAL_PREFIX (default BENCH) starts every serial: two wrk runs against one
-- server in the same second need different prefixes.
local key = os.getenv("BENCH_KEY")
local prefix = os.getenv("BENCH_SERIAL_PREFIX") or "BENCH"
-- BENCH_NO_CSR=1: the server generates the key pair (ca.key_algorithm).
local no_csr = os.getenv("BENCH_NO_CSR") == "1"
local csrs = {}
for line in io.lines(os.getenv("BENCH_CSRS")) do csrs[#csrs + 1] = line end

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- BENCH_DELAY_MS: each connection waits this long after an answer before its
-- next request (a lighter load than back to back; wrk's latency excludes it).
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay() return delay_ms end
end

local counter = 0
function request()
  counter = counter + 1
  local serial = string.format("%s-%d-%d-%d", prefix, os.time(), tid, counter)
  local body
  if no_csr then
    body = '{"serial":"' .. serial .. '"}'
  else
    body = '{"serial":"' .. serial .. '","csr":"' .. csrs[(counter % #csrs) + 1] .. '"}'
  end
  return wrk.format("POST", "/public/v1/register",
    { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end

-- Global, so that done() can read each thread's table with thread:get.
statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  -- Answers other than 201, summed over the threads: "statuses=503:2,409:1".
  -- rps counts the 201 answers only.
  local others, failed = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      if status ~= 201 then
        others[status] = (others[status] or 0) + n
        failed = failed + n
      end
    end
  end
  local listed = {}
  for status, n in pairs(others) do listed[#listed + 1] = status .. ":" .. n end
  table.sort(listed)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f requests=%d errors=%d statuses=%s ok=%d\n",
    (summary.requests - failed) / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    #listed > 0 and table.concat(listed, ",") or "none", summary.requests - failed))
end
