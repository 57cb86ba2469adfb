"""The exact-match cache: its key, its stores (in process and real Redis), single-flight, and Redis outages."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
import redis

from gateway.cache.exact import (ANSWER_FIELDS, IGNORED_FIELDS, ExactCache, MemoryBackend, RedisBackend,
                                 backend_for, cache_key)
from gateway.cache.near import NearCache
from gateway.extensions import make_redis
from gateway.redisguard import RedisGuard
from tests.conftest import free_port

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.2}
KEY = cache_key(BODY, "7")


def entry(text="Hello!"):
    return {"completion": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
                           "model": "gpt-4o-mini",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}},
            "provider": "openai", "model": "gpt-4o-mini", "cost_usd": "0.0000031", "created": 1700000000}


@pytest.fixture(params=["memory", "redis"])
def cache(request):
    if request.param == "memory":
        return ExactCache(MemoryBackend(), namespace="test:")
    # A patient client: these tests are about the cache, not about timeouts (the outage tests below are).
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=5)
    return ExactCache(RedisBackend(client), namespace=request.getfixturevalue("redis_prefix"))


def run_threads(n, target):
    """Start n threads on target(i) together; return their results (an exception counts as a result)."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


# --- the key ---------------------------------------------------------------------------------------------

def test_key_does_not_depend_on_key_order():
    reordered = {"temperature": 0.2, "messages": [{"content": "Say hello", "role": "user"}], "model": "gpt-4o-mini"}
    assert cache_key(reordered, "7") == KEY


@pytest.mark.parametrize("field", ANSWER_FIELDS)
def test_each_answer_field_changes_the_key(field):
    absent, a, b = (cache_key(body, "7") for body in (BODY, {**BODY, field: "value-a"}, {**BODY, field: "value-b"}))
    assert len({absent, a, b}) == 3


@pytest.mark.parametrize("field", sorted(IGNORED_FIELDS))
def test_ignored_fields_do_not_change_the_key(field):
    assert cache_key({**BODY, field: {"any": "value"}}, "7") == KEY


def test_streamed_and_plain_requests_share_a_key():
    streamed = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    assert cache_key(streamed, "7") == cache_key({**BODY, "stream": False}, "7")


def test_scope_changes_the_key():
    assert cache_key(BODY, "8") != KEY
    assert cache_key(BODY, "global") != KEY


def test_an_unknown_new_field_changes_the_key():
    assert cache_key({**BODY, "some_future_parameter": 1}, "7") != KEY


def test_key_is_sha256_hex_of_non_ascii_content():
    key = cache_key({**BODY, "messages": [{"role": "user", "content": "Grüß Gott, 你好"}]}, "7")
    assert len(key) == 64 and int(key, 16) >= 0 and key != KEY


# --- storing -----------------------------------------------------------------------------------------------

def test_small_entry_round_trips_uncompressed(cache):
    cache.set(KEY, entry(), 60)
    assert cache.get(KEY) == entry()
    assert cache.backend.get(cache._entry_key(KEY))[:1] == b"j"


def test_large_entry_round_trips_compressed(cache):
    big = entry("All work and no play makes Jack a dull boy. " * 2000)
    cache.set(KEY, big, 60)
    assert cache.get(KEY) == big
    stored = cache.backend.get(cache._entry_key(KEY))
    assert stored[:1] == b"z" and len(stored) < len(orjson.dumps(big)) // 10


def test_entry_expires_after_its_ttl(cache):
    cache.set(KEY, entry(), 0.3)
    assert cache.get(KEY) == entry()
    time.sleep(0.5)
    assert cache.get(KEY) is None


def test_zero_ttl_stores_nothing(cache):
    cache.set(KEY, entry(), 0)
    assert cache.get(KEY) is None


def test_scopes_do_not_see_each_other(cache):
    cache.set(cache_key(BODY, "7"), entry("for tenant 7"), 60)
    assert cache.get(cache_key(BODY, "8")) is None
    assert cache.get(cache_key(BODY, "7")) == entry("for tenant 7")


def test_unreadable_value_is_a_miss(cache):
    cache.backend.set(cache._entry_key(KEY), b"z-not-zlib", 60)
    assert cache.get(KEY) is None


def test_set_async_stores_then_unlocks_in_the_background(cache):
    assert cache.lock(KEY)
    cache.set_async(KEY, entry(), 60, unlock=True)
    assert cache.wait_for(KEY, timeout=2) == entry()
    deadline = time.monotonic() + 2
    while not cache.lock(KEY) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert time.monotonic() < deadline, "the lock was never released"


# --- single-flight -------------------------------------------------------------------------------------------

def test_simultaneous_identical_requests_make_one_upstream_call(cache):
    calls = []

    def upstream():
        calls.append(1)
        time.sleep(0.3)
        return entry("computed once")
    results = run_threads(20, lambda i: cache.get_or_compute(KEY, upstream, 60, wait_timeout=5))
    assert len(calls) == 1
    assert [r[0] for r in results] == [entry("computed once")] * 20
    assert sorted(r[1] for r in results) == [False] + [True] * 19


def test_waiters_proceed_when_the_lock_holder_dies(cache):
    assert cache.lock(KEY, ttl=0.5)  # a holder that crashed: it never stores and never unlocks
    start = time.monotonic()
    results = run_threads(5, lambda i: cache.get_or_compute(KEY, lambda: entry("own"), 60, wait_timeout=10))
    elapsed = time.monotonic() - start
    assert [r[0] for r in results] == [entry("own")] * 5
    assert 0.4 <= elapsed < 2


def test_a_failing_holder_releases_its_waiters_at_once(cache):
    started = threading.Event()

    def failing_upstream():
        started.set()
        time.sleep(0.3)
        raise RuntimeError("upstream said 500")

    def call(i):
        if i == 0:
            return cache.get_or_compute(KEY, failing_upstream, 60, wait_timeout=10)
        started.wait(5)
        t = time.monotonic()
        got = cache.get_or_compute(KEY, lambda: entry("own"), 60, wait_timeout=10)
        return got, time.monotonic() - t
    holder, (waited, elapsed) = run_threads(2, call)
    assert isinstance(holder, RuntimeError)
    assert waited == (entry("own"), False)
    assert elapsed < 1.5


def test_waiting_is_bounded_by_the_timeout(cache):
    assert cache.lock(KEY, ttl=30)
    start = time.monotonic()
    assert cache.wait_for(KEY, timeout=0.3) is None
    assert 0.3 <= time.monotonic() - start < 1.0


GEVENT_SINGLE_FLIGHT = """
from gevent import monkey; monkey.patch_all()
import json, time, gevent
from gateway.cache.exact import ExactCache, MemoryBackend
cache, calls, ticks = ExactCache(MemoryBackend()), [], []
def upstream():
    time.sleep(0.3)
    calls.append(len(ticks)); return {"completion": {}}
def ticker():
    while True:
        ticks.append(1); time.sleep(0.01)
other = gevent.spawn(ticker)
callers = [gevent.spawn(cache.get_or_compute, "k", upstream, 60, 5) for _ in range(50)]
gevent.joinall(callers)
other.kill()
print(json.dumps({"ticks_during_calls": calls, "hits": sum(g.value[1] for g in callers)}))
"""


def test_waiters_yield_to_other_greenlets_under_gevent():
    # The workers run gevent: while one caller waits upstream and 49 wait for it, the worker must keep running.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", GEVENT_SINGLE_FLIGHT], cwd=root, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": root}, check=True).stdout
    result = json.loads(out)
    assert result["hits"] == 49 and len(result["ticks_during_calls"]) == 1
    assert result["ticks_during_calls"][0] >= 10  # about 30 when nothing blocks; 1 if a sleep held the loop


# --- the in-process store ---------------------------------------------------------------------------------

def test_memory_backend_evicts_the_least_recently_used():
    backend = MemoryBackend(max_entries=2)
    backend.set("a", b"1", 60)
    backend.set("b", b"2", 60)
    backend.get("a")
    backend.set("c", b"3", 60)
    assert (backend.get("a"), backend.get("b"), backend.get("c")) == (b"1", None, b"3")


def test_memory_backend_is_bounded_in_bytes():
    backend = MemoryBackend(max_bytes=1000)
    for i in range(10):
        backend.set(str(i), b"x" * 300, 60)
    assert len(backend) == 3 and backend.get("9") == b"x" * 300


def test_backend_for_no_redis_is_in_process():
    assert isinstance(backend_for(None), MemoryBackend)


def test_redis_backend_refuses_a_decoding_client(redis_url):
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBackend(redis.Redis.from_url(redis_url, decode_responses=True))


# --- Redis outages ------------------------------------------------------------------------------------------

def test_refused_connections_are_misses_not_errors(redis_prefix):
    guard = RedisGuard(backoff=0)  # every call tries Redis (the back-off has its own test)
    cache = ExactCache(RedisBackend(make_redis(f"redis://127.0.0.1:{free_port()}/0")), redis_prefix, guard)
    cache.set(KEY, entry(), 60)
    assert cache.get(KEY) is None
    assert cache.lock(KEY) is True  # nothing to coordinate through: everyone answers for themselves
    assert cache.get_or_compute(KEY, lambda: entry("own"), 60, wait_timeout=5) == (entry("own"), False)
    assert guard.failures["cache"] >= 4 and guard.is_down("cache")


def test_cache_works_again_after_redis_restarts(own_redis, redis_prefix):
    guard = RedisGuard(backoff=0)  # every call tries Redis (the back-off has its own test)
    cache = ExactCache(RedisBackend(make_redis(own_redis.url)), redis_prefix, guard)
    cache.set(KEY, entry("before"), 60)
    assert cache.get(KEY) == entry("before")
    own_redis.stop()
    assert cache.get(KEY) is None
    cache.set(KEY, entry("while down"), 60)
    own_redis.start()
    cache.set(KEY, entry("after"), 60)
    assert cache.get(KEY) == entry("after")
    assert not guard.is_down("cache")


def test_a_restart_while_idle_costs_nothing(own_redis, redis_prefix):
    guard = RedisGuard(backoff=0)  # every call tries Redis (the back-off has its own test)
    cache = ExactCache(RedisBackend(make_redis(own_redis.url)), redis_prefix, guard)
    cache.set(KEY, entry(), 60)
    own_redis.stop()
    own_redis.start()  # nothing touched Redis while it was down: the pooled connection is dead
    cache.set(KEY, entry("after"), 60)
    assert cache.get(KEY) == entry("after")
    assert guard.failures == {}  # redis-py notices the closed socket and reconnects before sending


def test_a_restart_while_idle_costs_a_lookup_nothing_either(own_redis, redis_prefix):
    guard = RedisGuard(backoff=0)
    cache = ExactCache(RedisBackend(make_redis(own_redis.url)), redis_prefix, guard)
    assert cache.get(KEY) is None                     # one pooled connection, then idle
    own_redis.stop()
    own_redis.start()                                 # empty again, and the pooled connection is dead
    assert cache.get(KEY) is None and guard.failures == {}
    cache.set(KEY, entry("after"), 60)
    assert cache.get(KEY) == entry("after")


def test_a_hung_redis_costs_one_timeout_and_never_mixes_up_replies(own_redis, redis_prefix):
    cache = ExactCache(RedisBackend(make_redis(own_redis.url)), redis_prefix, RedisGuard(backoff=0))
    other = cache_key(BODY, "8")
    cache.set(KEY, entry("mine"), 60)
    own_redis.proc.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    assert cache.get(KEY) is None
    assert time.monotonic() - start < 1.0
    own_redis.proc.send_signal(signal.SIGCONT)
    # The late reply to the timed-out GET must not be read as the answer to the next command.
    assert cache.get(other) is None
    assert cache.get(KEY) == entry("mine")


def test_after_a_failure_redis_is_left_alone_for_the_back_off(own_redis, redis_prefix):
    """A hung Redis costs one socket timeout per back-off, not one per request."""
    cache = ExactCache(RedisBackend(make_redis(own_redis.url)), redis_prefix, RedisGuard(backoff=5))
    cache.set(KEY, entry("x"), 60)
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        for _ in range(20):
            assert cache.get(KEY) is None
        assert time.monotonic() - start < 0.6   # one 0.25 s timeout, then 19 skips
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)


def test_an_error_reply_keeps_its_connection(redis_url, redis_prefix):
    from gateway.extensions import redis_command
    client = make_redis(redis_url)
    client.rpush(redis_prefix + "list", b"x")          # GET on a list: WRONGTYPE, a whole reply
    assert redis_command(client, "GET", redis_prefix + "none") is None
    [conn] = client.connection_pool._connections
    sock = conn._sock
    with pytest.raises(redis.ResponseError):
        redis_command(client, "GET", redis_prefix + "list")
    assert redis_command(client, "GET", redis_prefix + "none") is None
    assert client.connection_pool._connections == [conn] and conn._sock is sock   # no reconnect


def test_a_lock_left_in_redis_by_an_outage_is_released_when_redis_is_back(own_redis, redis_prefix):
    """A holder that finishes while Redis is down, or being left alone after a failure, cannot delete its lock.
    Left there, the lock outlived the outage by up to its TTL (GATEWAY_DEADLINE): every identical request
    after it waited that long for an entry that was never coming."""
    cache = ExactCache(RedisBackend(make_redis(own_redis.url)), redis_prefix, RedisGuard(backoff=0.3), lock_ttl=60)
    assert cache.lock(KEY) is True
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        assert cache.get(cache_key(BODY, "8")) is None  # another request's look-up fails: Redis is left alone
        cache.unlock(KEY)                                # so this holder's unlock is skipped
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    time.sleep(0.4)  # past the back-off: Redis is asked again, and answers
    start = time.monotonic()
    assert cache.get_or_compute(KEY, lambda: entry("after"), 60, wait_timeout=10) == (entry("after"), False)
    assert time.monotonic() - start < 2.5
    assert cache.get(KEY) == entry("after")


def test_a_lock_that_was_never_taken_is_not_released_later(redis_prefix):
    """Locks not taken in Redis (it was unreachable) leave nothing to release: an outage under load must not
    pile up releases."""
    guard = RedisGuard(backoff=0)
    cache = ExactCache(RedisBackend(make_redis(f"redis://127.0.0.1:{free_port()}/0")), redis_prefix, guard)
    for i in range(50):
        key = cache_key(BODY, str(i))
        assert cache.lock(key) is True
        cache.unlock(key)
    assert cache._unreleased == {} and cache._held == {}


def test_a_holder_still_computing_keeps_its_lock_past_its_ttl(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    cache = ExactCache(RedisBackend(client), namespace=redis_prefix, lock_ttl=0.6)
    seen = {}

    def slow_upstream():
        time.sleep(1.5)                                   # past the lock's 0.6 s: renewed meanwhile
        seen["ttl_ms"] = client.pttl(cache._lock_key(KEY))
        return entry("slow")
    assert cache.get_or_compute(KEY, slow_upstream, 60, wait_timeout=5) == (entry("slow"), False)
    assert seen["ttl_ms"] > 0
    assert client.exists(cache._lock_key(KEY)) == 0       # and released at the end
    time.sleep(0.5)
    assert not cache._renewing                             # no lock held: the renewer is gone


def test_a_lock_left_by_a_worker_that_died_expires_within_the_lock_ttl(redis_url, redis_prefix):
    # Another process took it and was killed (OOM, kill -9): no one renews it. Its waiters used to wait a
    # whole GATEWAY_DEADLINE for it.
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    cache = ExactCache(RedisBackend(client), namespace=redis_prefix, lock_ttl=0.8)
    client.set(cache._lock_key(KEY), b"1", px=800)
    start = time.monotonic()
    assert cache.get_or_compute(KEY, lambda: entry("own"), 60, wait_timeout=30) == (entry("own"), False)
    assert 0.7 <= time.monotonic() - start < 2.5


def test_when_the_holder_fails_one_waiter_takes_over_and_the_rest_keep_waiting(cache):
    calls, started = [], threading.Event()

    def upstream(i):
        def call():
            calls.append(i)
            if i == 0:
                started.set()
                time.sleep(0.3)
                raise RuntimeError("upstream said 500")
            time.sleep(0.3)
            return entry("second try")
        return call

    def caller(i):
        if i:
            started.wait(5)
        return cache.get_or_compute(KEY, upstream(i), 60, wait_timeout=10)
    results = run_threads(6, caller)
    assert isinstance(results[0], RuntimeError)
    assert len(calls) == 2                                  # the failed holder, then one waiter; not all five
    assert [r[0] for r in results[1:]] == [entry("second try")] * 5


def test_the_apps_locks_live_seconds_not_a_whole_request(make_app):
    app, _ = make_app()
    gw = app.extensions["gateway"]
    assert gw.cache.lock_ttl == 30.0 and gw.cache.max_hold == gw.settings.deadline == 600.0


def test_a_write_leaves_no_older_copy_in_the_near_tier_even_one_read_while_it_was_on_its_way():
    """A refresh replaces an entry. Under gevent another request may read the store while the write is on its
    way, find the old entry, and keep it in the near tier: the write drops that copy once it is done."""
    cache = ExactCache(MemoryBackend(), namespace="test:", near=NearCache(seconds=60))
    cache.set("k", {"answer": "old"}, 60)
    assert cache.get("k") == {"answer": "old"}            # now in the near tier too
    real_set = cache.backend.set

    def slow_set(key, value, ttl):
        assert cache.get("k") == {"answer": "old"}        # read meanwhile: the old entry, kept near again
        real_set(key, value, ttl)
    cache.backend.set = slow_set
    cache.set("k", {"answer": "new"}, 60)
    assert cache.get("k") == {"answer": "new"}
