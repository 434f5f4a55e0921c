-- wrk script: POST /public/v1/register with pre-generated CSRs and a serial unique
-- to each request. BENCH_KEY and BENCH_CSRS (a file of JSON-escaped CSRs, one per
-- line) come from the environment; scripts/bench-register.sh sets them.
local key = os.getenv("BENCH_KEY")
-- BENCH_NO_CSR=1: the server generates the key pair (ca.key_algorithm).
local no_csr = os.getenv("BENCH_NO_CSR") == "1"
local csrs = {}
for line in io.lines(os.getenv("BENCH_CSRS")) do csrs[#csrs + 1] = line end

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local counter = 0
function request()
  counter = counter + 1
  local serial = string.format("BENCH-%d-%d-%d", os.time(), tid, counter)
  local body
  if no_csr then
    body = '{"serial":"' .. serial .. '"}'
  else
    body = '{"serial":"' .. serial .. '","csr":"' .. csrs[(counter % #csrs) + 1] .. '"}'
  end
  return wrk.format("POST", "/public/v1/register",
    { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }, body)
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
