"""Redis stopped and restarted under the request path: requests keep succeeding, the gateway recovers."""
import time

import responses

from gateway.store.keys import create_key
from tests.providers.wire import OPENAI_URL, openai_completion

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@responses.activate
def test_requests_succeed_while_redis_is_down_and_the_cache_returns_after(make_app, own_redis, redis_prefix):
    # About Redis itself: without the near tier, which would answer the first repeats from memory (test_near.py).
    app, _ = make_app(REDIS_URL=own_redis.url, GATEWAY_REDIS_PREFIX=redis_prefix, ANTHROPIC_API_KEY=None,
                      GEMINI_API_KEY=None, GATEWAY_CACHE_NEAR_SECONDS="0")
    key, _ = create_key(app.extensions["gateway"].engine, "k", rate_limit_per_minute=100)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "miss"
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "exact"

    own_redis.stop()
    started = time.monotonic()
    down = [client.post("/v1/chat/completions", json=BODY) for _ in range(10)]
    assert [r.status_code for r in down] == [200] * 10          # cache skipped, limits fail open
    assert all("X-Cache-Hit" not in r.headers for r in down)    # not consulted: neither a hit nor a miss
    assert time.monotonic() - started < 2.0                     # no request waits on the dead Redis
    assert upstream.call_count == 11
    assert app.extensions["gateway"].guard.is_down("cache")

    own_redis.start()                                           # same port, empty
    time.sleep(1.1)                                             # the guard's back-off
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "miss"
    again = client.post("/v1/chat/completions", json=BODY)
    assert again.headers["X-Cache-Hit"] == "exact"
    assert again.headers["X-RateLimit-Remaining"] == "98"      # counting again, in the new (empty) Redis
    assert not app.extensions["gateway"].guard.is_down("cache")
