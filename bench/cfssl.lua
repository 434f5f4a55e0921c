-- wrk script: POST /api/v1/cfssl/sign to `cfssl serve` with the same pre-generated
-- CSRs as bench/register.lua (BENCH_CSRS, a file of JSON-escaped CSRs, one per
-- line): the bare signing service Onboard's registration is compared with.
local csrs = {}
for line in io.lines(os.getenv("BENCH_CSRS")) do csrs[#csrs + 1] = line end

local counter = 0
function request()
  counter = counter + 1
  local body = '{"certificate_request":"' .. csrs[(counter % #csrs) + 1] .. '"}'
  return wrk.format("POST", "/api/v1/cfssl/sign", { ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout))
end
