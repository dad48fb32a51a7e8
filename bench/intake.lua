-- wrk script: distinct Fullstory Streams rage clicks (so none is a duplicate), with the bearer token.
local counter = 0
local thread_id = 0
local token = os.getenv("BENCH_STREAM_TOKEN") or "bench-stream-token"

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  math.randomseed(os.time() + tid)
  prefix = string.format("w%d-%d", tid, math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event":{"event_type":"rage-click","event_time":"2026-11-26T10:15:02.120Z","url":"https://shop.example.com/checkout",' ..
    '"target_text":"%s-%d","element_name":"checkout-pay-button","page_name":"Checkout"},' ..
    '"session":{"session_id":"5557778531805533:6915774531905556"},' ..
    '"user":{"user_id":"u_1842","user_email":"Ada.Lovelace@Example.com ","user_display_name":"Ada Lovelace"},' ..
    '"session_url":"https://app.fullstory.com/ui/o-1ABC/session/5557778531805533%%3A6915774531905556"}',
    prefix, counter)
  return wrk.format("POST", "/webhooks/fullstory/streams/bench",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
