"""Redis stopped and restarted under the request path: requests keep succeeding, the gateway recovers."""
import signal
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
    assert app.extensions["gateway"].cache.unavailable()      # left alone: the rate limiter found Redis gone

    own_redis.start()                                           # same port, empty
    time.sleep(1.1)                                             # the guard's back-off
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "miss"
    again = client.post("/v1/chat/completions", json=BODY)
    assert again.headers["X-Cache-Hit"] == "exact"
    assert again.headers["X-RateLimit-Remaining"] == "98"      # counting again, in the new (empty) Redis
    assert not app.extensions["gateway"].guard.is_down("cache")


@responses.activate
def test_a_hung_redis_costs_a_request_one_timeout_not_one_per_component(make_app, own_redis, redis_prefix):
    """A Redis that accepts and never answers (paused: a network that drops packets looks the same). Each
    component asking for itself, one request paid a 0.25 s socket timeout for the rate limiter, one for the
    cache and one per model of its chain for the breakers: 1.25 s, on every request a second apart."""
    app, _ = make_app(REDIS_URL=own_redis.url, GATEWAY_REDIS_PREFIX=redis_prefix, GATEWAY_CACHE_NEAR_SECONDS="0")
    key, _ = create_key(app.extensions["gateway"].engine, "k", rate_limit_per_minute=100)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    responses.post(OPENAI_URL, json=openai_completion())
    assert client.post("/v1/chat/completions", json=BODY).status_code == 200
    time.sleep(1.1)   # the breakers look at Redis again (once a second per model)
    guard = app.extensions["gateway"].guard
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        timings, timeouts = [], []
        for _ in range(2):
            started, failed = time.monotonic(), sum(guard.failures.values())
            resp = client.post("/v1/chat/completions", json=BODY)
            timings.append(time.monotonic() - started)
            timeouts.append(sum(guard.failures.values()) - failed)
            assert resp.status_code == 200 and "X-Cache-Hit" not in resp.headers
            time.sleep(1.1)   # past the guard's back-off: Redis is asked again
        assert timeouts == [1, 1]   # each request asked Redis once, and waited out one timeout
        assert max(timings) < 1.0, timings   # one 0.25 s timeout each, where it was 1.25 s (with room for a slow machine)
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    time.sleep(1.1)
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "exact"


def test_with_redis_down_and_limits_failing_closed_a_key_gets_a_503_not_a_quota_429(make_app):
    from gateway.store.keys import create_key
    app, _ = make_app(REDIS_URL="redis://127.0.0.1:9/0", GATEWAY_RATELIMIT_FAIL_OPEN="false")
    key, _ = create_key(app.extensions["gateway"].engine, "limited", rate_limit_per_minute=10)
    resp = app.test_client().post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    err = resp.get_json()["error"]
    assert err["code"] == "rate_limiter_unavailable" and "allows 10 requests" not in err["message"]
