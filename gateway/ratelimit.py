"""Per-key request limits: an exact sliding-window log, in Redis (shared by every worker) or in process.

Why a sliding-window log: the promise is "at most N requests in ANY window of `window_seconds`". A fixed
window (INCR + EXPIRE) lets 2N through across a boundary; GCRA with a burst of N admits N at once and then one
more every window/N, so nearly 2N in the first window. The log keeps one timestamp per admitted request, at
most N per key, which is small for per-minute limits (a limit of 10,000 costs about 1 MB in Redis while full).

What a Decision means:
- `remaining`: requests still admissible in the window after this one (0 when denied).
- `reset_seconds`: until the window is empty again, i.e. until a full `limit` is available (the meaning of
  OpenAI's x-ratelimit-reset-requests). Right after an admitted request this is the whole window.
- `retry_after`: whole seconds, rounded up and at least 1, until a request would be admitted; 0 when allowed.
  Send it as Retry-After.

Redis does the whole decision in one Lua script (atomic, one round trip) and reads the time with TIME inside
it, so workers on hosts with skewed clocks still agree; `now` is therefore ignored there. The in-process
window exists for deployments without Redis and counts per worker only.
"""
import bisect
import dataclasses
import math
import threading
import time

import redis

from gateway import ids
from gateway.extensions import redis_command
from gateway.redisguard import RedisGuard

COMPONENT = "ratelimit"
# redis-py wraps socket errors in its own, but an OSError from a TLS layer must not reach the request either.
FAILURES = (redis.RedisError, OSError)

# KEYS[1]: the key's log (ZSET of admission times in microseconds); ARGV: limit, window (µs), a unique member.
# Returns {allowed, remaining, reset (µs), retry (µs)}. An entry admitted at s counts while now < s + window.
_SLIDING_WINDOW = """
if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: TIME before writes
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  return {1, limit - count - 1, window, 0}
end
local newest = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
-- More than `limit` entries exist only if the limit was lowered: that many must leave before one fits.
local freeing = tonumber(redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')[2])
return {0, 0, newest + window - now, freeing + window - now}
"""


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float
    retry_after: int
    unknown: bool = False  # refused because Redis could not say (fail closed), not because the key is over


class RedisWindow:
    """The log in Redis: one EVALSHA per request. When Redis answers NOSCRIPT (after a restart or a SCRIPT
    FLUSH) the script is loaded again and the call repeated, so nothing here goes stale."""

    def __init__(self, client):
        self._client = client
        self._script = client.register_script(_SLIDING_WINDOW)

    def hit(self, key, limit, window_seconds, now=None):
        args = (1, key, limit, int(window_seconds * 1_000_000), ids.token_hex(8))
        try:
            reply = redis_command(self._client, "EVALSHA", self._script.sha, *args)
        except redis.exceptions.NoScriptError:
            self._client.script_load(_SLIDING_WINDOW)
            reply = redis_command(self._client, "EVALSHA", self._script.sha, *args)
        allowed, remaining, reset_us, retry_us = reply
        return bool(allowed), int(remaining), reset_us / 1e6, retry_us / 1e6


class MemoryWindow:
    """The same log in this process, behind a lock: exact for one worker, and per worker when there are several."""

    _SWEEP_EVERY = 1024  # calls between sweeps of keys that have gone quiet, so the dict stays small

    def __init__(self):
        self._logs = {}
        self._lock = threading.Lock()
        self._calls = 0

    def hit(self, key, limit, window_seconds, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            self._calls += 1
            if self._calls % self._SWEEP_EVERY == 0:
                self._sweep(now, window_seconds)
            entries = self._logs.setdefault(key, [])
            del entries[:bisect.bisect_right(entries, now - window_seconds)]
            count = len(entries)
            if count < limit:
                bisect.insort(entries, now)
                return True, limit - count - 1, entries[-1] + window_seconds - now, 0.0
            return (False, 0, entries[-1] + window_seconds - now,
                    entries[count - limit] + window_seconds - now)

    def _sweep(self, now, window_seconds):
        for key in [k for k, entries in self._logs.items() if not entries or entries[-1] <= now - window_seconds]:
            del self._logs[key]


def backend_for(redis_client):
    """The Redis window when the gateway has a Redis client, the in-process one when it has None."""
    return MemoryWindow() if redis_client is None else RedisWindow(redis_client)


class _Skipped(Exception):
    """Redis failed a moment ago (RedisGuard.skip): decide as if it had failed again, without waiting."""


class RateLimiter:
    def __init__(self, backend, namespace="gw:", fail_open=True, guard=None, window_seconds=60):
        self.backend = backend
        self.namespace = namespace
        self.fail_open = fail_open
        self.guard = guard or RedisGuard()
        self.window_seconds = window_seconds

    def check(self, key_id, limit_per_minute, now=None):
        """Admit or refuse one request of key `key_id`, allowed `limit_per_minute` per window.

        `now` (seconds on any one clock) is for tests of the in-process window; Redis uses its own clock.
        Never raises for a Redis failure: the limiter fails open or closed as configured.
        """
        limit, window = int(limit_per_minute), self.window_seconds
        if limit < 1:
            return Decision(False, limit, 0, float(window), max(1, math.ceil(window)))
        try:
            if self.guard.skip(COMPONENT):
                raise _Skipped()
            allowed, remaining, reset, wait = self.backend.hit(f"{self.namespace}rl:{key_id}", limit, window, now)
        except (FAILURES + (_Skipped,)) as exc:
            if not isinstance(exc, _Skipped):
                self.guard.failed(COMPONENT, exc)
            if self.fail_open:
                # The best guess without the log: as if this were the window's first request.
                return Decision(True, limit, limit - 1, float(window), 0)
            return Decision(False, limit, 0, 1.0, 1, unknown=True)
        self.guard.ok(COMPONENT)
        retry_after = 0 if allowed else max(1, math.ceil(wait))
        return Decision(allowed, limit, remaining, max(0.0, reset), retry_after)
