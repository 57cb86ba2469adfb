"""The rate limiter (in process and on real Redis), the RedisGuard, and what both do when Redis goes away."""
import signal
import threading
import time

import pytest
import redis

from gateway.extensions import make_redis
from gateway.ratelimit import MemoryWindow, RateLimiter, RedisWindow, backend_for
from gateway.redisguard import RedisGuard
from tests.conftest import free_port


@pytest.fixture
def redis_limiter(redis_url, redis_prefix):
    """redis_limiter(**kwargs) -> a RateLimiter on the test Redis, in this test's namespace."""
    # A patient client: these tests are about the algorithm, not about timeouts (the outage tests below are).
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    return lambda **kwargs: RateLimiter(RedisWindow(client), namespace=redis_prefix, **kwargs)


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request):
    if request.param == "memory":
        return lambda **kwargs: RateLimiter(MemoryWindow(), namespace="test:", **kwargs)
    return request.getfixturevalue("redis_limiter")


def run_threads(n, target):
    """Start n threads on target(i) together; return their results."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        results[i] = target(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def redis_records(caplog):
    return [r for r in caplog.records if r.name == "gateway.redis"]


# --- the algorithm ------------------------------------------------------------------------------------------

def test_exactly_the_limit_passes_under_concurrency(make_limiter):
    limiter = make_limiter()
    decisions = run_threads(100, lambda i: limiter.check(1, 10))
    assert sum(d.allowed for d in decisions) == 10
    assert limiter.guard.failures == {}


def test_remaining_counts_down_exactly(make_limiter):
    limiter = make_limiter()
    decisions = [limiter.check(1, 5) for _ in range(6)]
    assert [(d.allowed, d.limit, d.remaining) for d in decisions] == \
        [(True, 5, 4), (True, 5, 3), (True, 5, 2), (True, 5, 1), (True, 5, 0), (False, 5, 0)]
    assert [d.retry_after for d in decisions[:5]] == [0] * 5 and decisions[5].retry_after >= 1


def test_keys_have_separate_windows(make_limiter):
    limiter = make_limiter()
    assert limiter.check(1, 1).allowed
    assert not limiter.check(1, 1).allowed
    assert limiter.check(2, 1).allowed


def test_a_limit_below_one_admits_nothing(make_limiter):
    decision = make_limiter().check(1, 0)
    assert (decision.allowed, decision.remaining, decision.retry_after) == (False, 0, 60)


def test_the_window_slides():
    limiter = RateLimiter(MemoryWindow())
    assert all(limiter.check(1, 3, now=t).allowed for t in (0, 30, 59))
    assert not limiter.check(1, 3, now=59.9).allowed
    assert limiter.check(1, 3, now=60).allowed  # the request at 0 has left the window
    assert not limiter.check(1, 3, now=61).allowed
    assert limiter.check(1, 3, now=90).allowed  # and the one at 30


def test_the_window_resets_on_redis(redis_limiter):
    limiter = redis_limiter(window_seconds=1)
    assert [limiter.check(1, 2).allowed for _ in range(3)] == [True, True, False]
    time.sleep(1.05)
    assert limiter.check(1, 2).allowed


def test_retry_after_is_the_wait_rounded_up_and_reset_is_until_the_window_empties():
    limiter = RateLimiter(MemoryWindow())
    for t in (0, 10, 20):
        assert limiter.check(1, 3, now=t).reset_seconds == 60
    decision = limiter.check(1, 3, now=30.5)
    assert (decision.allowed, decision.retry_after, decision.reset_seconds) == (False, 30, 49.5)
    assert not limiter.check(1, 3, now=59.9).allowed
    assert limiter.check(1, 3, now=60).allowed


def test_retry_after_matches_the_true_wait_on_redis(redis_limiter):
    limiter = redis_limiter(window_seconds=3)
    first = time.monotonic()
    assert limiter.check(1, 2).allowed and limiter.check(1, 2).allowed
    time.sleep(1.2)
    decision = limiter.check(1, 2)
    true_wait = first + 3 - time.monotonic()
    assert not decision.allowed
    assert abs(decision.retry_after - true_wait) <= 1
    assert abs(decision.reset_seconds - true_wait) < 0.2
    time.sleep(decision.retry_after - 1)
    assert not limiter.check(1, 2).allowed  # Retry-After never invites a client back too early
    time.sleep(1)
    assert limiter.check(1, 2).allowed


def test_redis_decides_on_its_own_clock(redis_limiter):
    limiter = redis_limiter()
    assert limiter.check(1, 1, now=0).allowed
    assert not limiter.check(1, 1, now=10 ** 9).allowed  # a worker's far-off clock changes nothing


def test_the_redis_log_expires_with_its_window(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    RateLimiter(RedisWindow(client), namespace=redis_prefix, window_seconds=2).check(1, 5)
    assert 0 < client.pttl(redis_prefix + "rl:1") <= 2000


def test_backend_for_no_redis_is_in_process():
    assert isinstance(backend_for(None), MemoryWindow)


# --- the guard ---------------------------------------------------------------------------------------------

def test_guard_logs_a_failure_once_per_interval_with_the_count(caplog):
    clock = FakeClock()
    guard = RedisGuard(interval=30, clock=clock)
    for _ in range(50):
        guard.failed("cache", redis.ConnectionError("refused"))
    clock.now += 31
    guard.failed("cache", redis.ConnectionError("refused"))
    messages = [r.getMessage() for r in redis_records(caplog)]
    assert len(messages) == 2
    assert "cache: 1 failure(s)" in messages[0] and "cache: 50 failure(s)" in messages[1]
    assert guard.failures == {"cache": 51}


def test_guard_logs_a_recovery_once(caplog):
    guard = RedisGuard()
    guard.failed("ratelimit", redis.ConnectionError("refused"))
    guard.ok("ratelimit")
    guard.ok("ratelimit")
    assert [r.getMessage() for r in redis_records(caplog)][1:] == ["redis is back for ratelimit (0 failure(s) "
                                                                   "since the last report)"]
    assert not guard.is_down("ratelimit") and guard.failures == {"ratelimit": 1}


def test_guard_counts_components_apart():
    guard = RedisGuard()
    guard.failed("cache", redis.ConnectionError("refused"))
    assert guard.is_down("cache") and not guard.is_down("ratelimit")


# --- Redis outages ------------------------------------------------------------------------------------------

def refused_limiter(prefix, **kwargs):
    return RateLimiter(RedisWindow(make_redis(f"redis://127.0.0.1:{free_port()}/0")), prefix, **kwargs)


def test_fails_open_when_redis_refuses(redis_prefix):
    limiter = refused_limiter(redis_prefix, fail_open=True)
    decision = limiter.check(1, 10)
    assert (decision.allowed, decision.remaining, decision.retry_after) == (True, 9, 0)
    assert limiter.guard.failures == {"ratelimit": 1}


def test_fails_closed_when_redis_refuses(redis_prefix):
    limiter = refused_limiter(redis_prefix, fail_open=False)
    decision = limiter.check(1, 10)
    assert (decision.allowed, decision.remaining, decision.retry_after) == (False, 0, 1)


def test_an_outage_is_logged_once_per_interval_not_per_request(redis_prefix, caplog):
    clock = FakeClock()
    limiter = refused_limiter(redis_prefix, guard=RedisGuard(interval=30, clock=clock, backoff=0))
    for _ in range(50):
        limiter.check(1, 10)
    assert len(redis_records(caplog)) == 1
    clock.now += 31
    limiter.check(1, 10)
    assert len(redis_records(caplog)) == 2 and "50 failure(s)" in redis_records(caplog)[1].getMessage()


def test_a_hung_redis_fails_open_within_the_socket_timeout(own_redis, redis_prefix):
    limiter = RateLimiter(RedisWindow(make_redis(own_redis.url)), redis_prefix, guard=RedisGuard(backoff=0))
    assert limiter.check(1, 10).remaining == 9
    own_redis.proc.send_signal(signal.SIGSTOP)
    start = time.monotonic()
    assert limiter.check(1, 10).allowed
    assert time.monotonic() - start < 1.0
    own_redis.proc.send_signal(signal.SIGCONT)
    # Counting goes on where it was; the timed-out request may have counted too (it reached Redis's socket).
    assert limiter.check(1, 10).remaining in (7, 8)


def test_the_limiter_recovers_and_reloads_its_script_after_redis_restarts(own_redis, redis_prefix, caplog):
    limiter = RateLimiter(RedisWindow(make_redis(own_redis.url)), redis_prefix, fail_open=False,
                          guard=RedisGuard(backoff=0))
    assert limiter.check(1, 10).allowed
    own_redis.stop()
    assert not limiter.check(1, 10).allowed
    own_redis.start()
    probe = redis.Redis(port=own_redis.port, socket_timeout=2)
    sha = limiter.backend._script.sha
    assert probe.script_exists(sha) == [False]  # a fresh server: the script is gone
    decision = limiter.check(1, 10)
    assert (decision.allowed, decision.remaining) == (True, 9)
    assert probe.script_exists(sha) == [True]
    assert [r.getMessage()[:26] for r in redis_records(caplog)] == ["redis unavailable for rate",
                                                                    "redis is back for ratelimi"]


def test_after_a_failure_the_limiter_decides_without_redis_for_the_back_off(own_redis, redis_prefix):
    limiter = RateLimiter(RedisWindow(make_redis(own_redis.url)), redis_prefix, guard=RedisGuard(backoff=5))
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        assert all(limiter.check(1, 10).allowed for _ in range(20))
        assert time.monotonic() - start < 0.6   # one 0.25 s timeout, then 19 decisions without waiting
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)


def test_a_redis_found_unreachable_is_left_alone_by_every_component():
    guard = RedisGuard(backoff=1.0)
    guard.failed("ratelimit", redis.TimeoutError("Timeout reading from socket"))
    assert guard.skip("cache") and guard.skip("breaker") and not guard.is_down("cache")
    guard.ok("ratelimit")
    assert not guard.skip("cache")


def test_an_error_reply_is_left_to_its_component():
    guard = RedisGuard(backoff=1.0)
    guard.failed("cache", redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"))
    assert guard.skip("cache") and not guard.skip("ratelimit")
