"""The near tier: repeats of an entry just read from Redis are answered in process, briefly and boundedly."""
import secrets

import pytest
import redis

from gateway.cache.exact import ExactCache, RedisBackend, encode
from gateway.cache.near import NearCache
from tests.cache.test_exact import KEY, entry


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class CountingBackend(RedisBackend):
    def __init__(self, client):
        super().__init__(client)
        self.gets = 0

    def get(self, key):
        self.gets += 1
        return super().get(key)


@pytest.fixture
def tiers(redis_url, redis_prefix):
    clock = Clock()
    backend = CountingBackend(redis.Redis.from_url(redis_url, socket_timeout=5))
    near = NearCache(1.0, max_entries=3, max_value_bytes=4096, clock=clock)
    return ExactCache(backend, namespace=redis_prefix, near=near), backend, near, clock


def test_a_repeat_within_the_window_is_answered_without_redis(tiers):
    cache, backend, _, _ = tiers
    cache.set(KEY, entry(), 60)
    assert cache.get(KEY) == entry() and backend.gets == 1
    assert cache.get(KEY) == entry() and cache.get(KEY) == entry()
    assert backend.gets == 1


def test_after_the_window_redis_is_asked_again(tiers):
    cache, backend, _, clock = tiers
    cache.set(KEY, entry(), 60)
    cache.get(KEY)
    clock.now += 1.0
    cache.backend._client.delete(cache._entry_key(KEY))  # Redis let it go: the near tier follows within 1 s
    assert cache.get(KEY) is None and backend.gets == 2


def test_a_write_does_not_fill_the_near_tier(tiers):
    # The writer's entry is the caller's own object, which it may change after storing it.
    cache, backend, near, _ = tiers
    cache.set(KEY, entry(), 60)
    assert len(near) == 0
    cache.get(KEY)
    assert backend.gets == 1 and len(near) == 1


def test_misses_are_not_kept(tiers):
    cache, backend, near, _ = tiers
    assert cache.get(KEY) is None and cache.get(KEY) is None
    assert backend.gets == 2 and len(near) == 0


def test_large_entries_are_left_to_redis(tiers):
    cache, backend, near, _ = tiers
    big = entry(secrets.token_urlsafe(6000))  # zlib cannot shrink it under the limit
    assert len(encode(big)) > 4096 >= len(encode(entry()))
    cache.set(KEY, big, 60)
    assert cache.get(KEY) == big and cache.get(KEY) == big
    assert backend.gets == 2 and len(near) == 0


def test_the_tier_is_bounded_oldest_out_first():
    clock = Clock()
    near = NearCache(1.0, max_entries=2, clock=clock)
    for k in "abc":
        near.put(k, {"k": k}, 10)
    assert len(near) == 2 and near.get("a") is None and near.get("c") == {"k": "c"}


def test_an_entry_expires_on_its_own():
    clock = Clock()
    near = NearCache(0.5, clock=clock)
    near.put("a", {"k": 1}, 10)
    clock.now += 0.49
    assert near.get("a") == {"k": 1}
    clock.now += 0.01
    assert near.get("a") is None and len(near) == 0
