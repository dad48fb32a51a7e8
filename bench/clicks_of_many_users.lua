-- wrk script: distinct Fullstory Streams rage, dead and error clicks (in turn) of many users, with
-- the bearer token. Each wrk thread takes every n-th user of BENCH_USERS (default 10,000), so a
-- user's clicks come from one thread, in order; a user's session changes every fourth click (and
-- with each run: a warm-up's sessions are not continued).
local thread_id = 0
local token = os.getenv("BENCH_STREAM_TOKEN") or "bench-stream-token"
local users = tonumber(os.getenv("BENCH_USERS") or "10000")
local kinds = {"rage-click", "dead-click", "error-click"}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  math.randomseed(os.time() + tid)
  prefix = string.format("m%d-%d", tid, math.random(1, 1000000000))
  counter = 0
  step = tonumber(os.getenv("BENCH_WRK_THREADS"))  -- wrk's -t, which bench/run.py sets with it
end

function request()
  local user = (counter * step + tid - 1) % users
  local round = math.floor((counter * step + tid - 1) / users)
  counter = counter + 1
  local body = string.format(
    '{"event":{"event_type":"%s","url":"https://shop.example.com/checkout","target_text":"%s-%d",' ..
    '"page_name":"Checkout"},"session":{"session_id":"%s:%d-%d"},"user":{"user_id":"user-%d"}}',
    kinds[(counter % 3) + 1], prefix, counter, prefix, user, math.floor(round / 4), user)
  return wrk.format("POST", "/webhooks/fullstory/streams/bench",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
