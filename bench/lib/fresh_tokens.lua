-- wrk script: a different bearer token on every request.
-- usage: wrk -tT ... -s fresh_tokens.lua URL -- TOKENS_FILE T [START]
-- TOKENS_FILE holds one token per line. The T threads split the list into T equal stretches,
-- shifted by START lines (default 0), and each walks its stretch onward, wrapping around the
-- list. bench/run warms up from START = half the list and measures from 0, so a token of the
-- warm-up comes back only after half the list. The request strings are built once, in init(),
-- so that the load generator spends no more per request than with a fixed `-H` header.

local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

local requests = {}
local n = 0
local i = 0

function init(args)
   local path = args[1]
   if path == nil then
      error("fresh_tokens.lua: pass the token file after --")
   end
   for line in io.lines(path) do
      if #line > 0 then
         n = n + 1
         requests[n] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
      end
   end
   if n == 0 then
      error("fresh_tokens.lua: no tokens in " .. path)
   end
   -- spread the threads over the list (args[2]: wrk's thread count; args[3]: start line)
   local nthreads = tonumber(args[2]) or 1
   local start = tonumber(args[3]) or 0
   i = (start + math.floor((id or 0) * n / nthreads)) % n
end

function request()
   i = i + 1
   if i > n then i = 1 end
   return requests[i]
end
