"""Exact-match response cache: the same request (same scope) gets the stored answer instead of a new upstream call.

The key is a hash of everything in the request that can change the answer. A field counts unless it is
known not to: a new OpenAI parameter then makes requests differ (a missed hit) instead of making different
requests share an answer (a wrong one). `ANSWER_FIELDS` lists the parameters we know change the answer;
`IGNORED_FIELDS` the few we know do not. `stream` is ignored, so a streamed and a plain request share an entry:
the stored entry is always a whole chat.completion, and the caller replays it as events when asked to stream.

Single-flight: when identical requests arrive together and nothing is stored yet, one of them takes a short
lock (SET NX PX in Redis, so across workers) and calls upstream; the others poll for the entry with short sleeps
(which yield under gevent) and are answered from it. The lock is advisory: correctness never depends on it. If
its holder dies, the lock expires; if it fails, it unlocks without an entry; either way waiters see "no lock and
no entry" and call upstream themselves, and nobody waits longer than `wait_timeout`.

A Redis failure never leaves this module: a read is a miss, a write or lock is skipped, and the RedisGuard hears
about it. Values are stored as one flag byte, then orjson (b"j") or, above ~1 KB, zlib level 1 of it (b"z").
"""
import collections
import hashlib
import logging
import threading
import time
import zlib

import orjson
import redis

from gateway.extensions import redis_command
from gateway.jsonbytes import dumps
from gateway.redisguard import RedisGuard

log = logging.getLogger("gateway.cache")

COMPONENT = "cache"
FAILURES = (redis.RedisError, OSError)

ANSWER_FIELDS = (
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "reasoning_effort", "verbosity", "modalities", "audio", "prediction",
    "web_search_options", "service_tier", "functions", "function_call",
)
# Only fields that cannot change the answer's content: transport, bookkeeping and provider-side caching hints.
IGNORED_FIELDS = frozenset({
    "stream", "stream_options", "user", "metadata", "store", "safety_identifier", "prompt_cache_key",
})

_COMPRESS_ABOVE = 1024
_RAW, _ZLIB = b"j", b"z"
_LOCK_TTL_SECONDS = 30.0
_RELEASE_RETRY_SECONDS = 1.0  # how often a lock Redis did not let us release is released again
_HELD_PRUNE_ABOVE = 4096      # locks this worker holds (one per in-flight miss): past this, forget expired ones
_FAILED = object()
_POLL_FIRST, _POLL_MAX = 0.01, 0.1  # waiters poll quickly at first: most answers are cached within a second


def cache_key(body, scope):
    """None when the request cannot be keyed, else SHA-256 hex of the request minus IGNORED_FIELDS, with `scope` (an API key id, or "global" when the
    cache is shared gateway-wide) so tenants never see each other's answers.

    The hashed text is canonical JSON: orjson with sorted keys at every level, compact, UTF-8 unescaped.
    """
    material = {"scope": str(scope), "request": {k: v for k, v in body.items() if k not in IGNORED_FIELDS}}
    try:
        return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except orjson.JSONEncodeError:
        return None  # nested deeper than orjson writes (254 levels): such a request is simply not cached


def encode(entry):
    data = dumps(entry)
    if len(data) > _COMPRESS_ABOVE:
        return _ZLIB + zlib.compress(data, 1)
    return _RAW + data


def decode(value):
    flag, data = value[:1], value[1:]
    if flag == _ZLIB:
        data = zlib.decompress(data)
    elif flag != _RAW:
        raise ValueError(f"unknown cache value flag {flag!r}")
    return orjson.loads(data)


def _ms(seconds):
    return max(1, int(seconds * 1000))


class RedisBackend:
    """Entries in Redis, shared by every worker. Needs a client that returns bytes (the gateway's does)."""

    def __init__(self, client):
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the cache stores binary values: give it a Redis client without decode_responses")
        self._client = client

    def get(self, key):
        return redis_command(self._client, "GET", key)  # the hot path: every cache look-up

    def set(self, key, value, ttl_seconds):
        self._client.set(key, value, px=_ms(ttl_seconds))

    def set_nx(self, key, value, ttl_seconds):
        return bool(self._client.set(key, value, px=_ms(ttl_seconds), nx=True))

    def delete(self, key):
        self._client.delete(key)

    def extend(self, keys, ttl_seconds):
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.pexpire(key, _ms(ttl_seconds))
        pipe.execute()


class MemoryBackend:
    """Entries in this process only (each worker has its own): expiring, bounded, least recently used out first."""

    def __init__(self, max_entries=10_000, max_bytes=256 * 1024 * 1024, clock=time.monotonic):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._clock = clock
        self._items = collections.OrderedDict()  # key -> (expires_at, value), least recently used first
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            return self._live(key)

    def set(self, key, value, ttl_seconds):
        with self._lock:
            self._put(key, value, ttl_seconds)

    def set_nx(self, key, value, ttl_seconds):
        with self._lock:
            if self._live(key) is not None:
                return False
            self._put(key, value, ttl_seconds)
            return True

    def delete(self, key):
        with self._lock:
            self._drop(key)

    def extend(self, keys, ttl_seconds):
        with self._lock:
            for key in keys:
                value = self._live(key)
                if value is not None:
                    self._put(key, value, ttl_seconds)

    def __len__(self):
        return len(self._items)

    def _live(self, key):
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item[1]

    def _put(self, key, value, ttl_seconds):
        self._drop(key)
        self._items[key] = (self._clock() + ttl_seconds, value)
        self._bytes += len(value)
        while self._items and (len(self._items) > self.max_entries or self._bytes > self.max_bytes):
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= len(old)

    def _drop(self, key):
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])


def backend_for(redis_client):
    """The Redis backend when the gateway has a Redis client, the in-process one when it has None."""
    return MemoryBackend() if redis_client is None else RedisBackend(redis_client)


class ExactCache:
    """Entries live at `{namespace}cache:{key}`, single-flight locks at `{namespace}cache:lock:{key}`.

    Entries are dicts orjson can write: {"completion", "provider", "model", "cost_usd", "created"}.
    """

    def __init__(self, backend, namespace="gw:", guard=None, lock_ttl=_LOCK_TTL_SECONDS, near=None, max_hold=600.0):
        self.backend = backend
        self.near = near  # a NearCache in front of Redis (cache/near.py), or None
        self.namespace = namespace
        self.guard = guard or RedisGuard()
        self.lock_ttl = lock_ttl
        self._held = {}         # lock key -> when it expires (time.monotonic): locks this worker took in Redis
        self._taken = {}        # lock key -> when it was taken: renewed for at most max_hold (a whole request)
        self.max_hold = max_hold
        self._unreleased = {}   # the same, for locks whose release Redis did not take: released again later
        self._releasing = threading.Lock()
        self._releaser = False
        self._renewing = False

    def _entry_key(self, key):
        return f"{self.namespace}cache:{key}"

    def _lock_key(self, key):
        return f"{self.namespace}cache:lock:{key}"

    def _call(self, fn, *args, default=None):
        return self.guard.call(COMPONENT, fn, *args, default=default, catch=FAILURES)

    def unavailable(self):
        """The store failed lately and is being left alone (see RedisGuard): look-ups are skipped."""
        return self.guard.is_down(COMPONENT) or self.guard.skip(COMPONENT)

    def get(self, key):
        """The stored entry, or None (not stored, expired, unreadable, or the store is unreachable).
        The entry may be shared with other requests (the near tier): copy it before changing it."""
        near = self.near
        if near is not None:
            entry = near.get(key)
            if entry is not None:
                return entry
        value = self._call(self.backend.get, self._entry_key(key))
        if value is None:
            return None
        try:
            entry = decode(value)
        except (ValueError, zlib.error) as exc:  # orjson.JSONDecodeError is a ValueError
            # A bad value is a miss; the next answer for this key overwrites it.
            log.warning("unreadable cache entry %s…: %s", key[:12], exc)
            return None
        if near is not None:
            near.put(key, entry, len(value))
        return entry

    def set(self, key, entry, ttl_seconds):
        """Store `entry` for `ttl_seconds` (may be fractional; 0 or less stores nothing)."""
        if ttl_seconds <= 0:
            return
        self._call(self.backend.set, self._entry_key(key), encode(entry), ttl_seconds)
        if self.near is not None:
            # A refresh replaces an entry this worker may hold. After the write: a request that read Redis while
            # it was on its way would have put the old entry back.
            self.near.drop(key)

    def set_async(self, key, entry, ttl_seconds, unlock=False):
        """`set` (then `unlock`, if asked) off the request path: in a daemon thread, a greenlet under gevent.

        Unlock here, not after this returns: an unlock before the write lands sends waiters upstream.
        """
        def write():
            self.set(key, entry, ttl_seconds)
            if unlock:
                self.unlock(key)
        threading.Thread(target=write, name="gateway-cache-write", daemon=True).start()

    def lock(self, key, ttl=None):
        """Take the single-flight lock for `key`. True when this caller should call upstream: it took the lock,
        or the store is unreachable (then there is nothing to coordinate through and everyone goes upstream)."""
        ttl = ttl or self.lock_ttl
        lock = self._lock_key(key)
        taken = self._call(self.backend.set_nx, lock, b"1", ttl, default=_FAILED)
        if taken is _FAILED:
            return True
        if taken:
            held = self._held
            if len(held) >= _HELD_PRUNE_ABOVE:  # a holder that never unlocked (it cannot, but never grow)
                now = time.monotonic()
                for k in [k for k, expires in held.items() if expires <= now]:
                    held.pop(k, None)
            held[lock] = time.monotonic() + ttl
            self._taken[lock] = time.monotonic()
            if not self._renewing:
                self._renewing = True
                threading.Thread(target=self._renew_loop, name="gateway-cache-renew", daemon=True).start()
        return taken

    def _renew_loop(self):
        """While this worker holds locks, extend them every third of their TTL. A lock lives `lock_ttl` (30 s)
        past its holder's last renewal, not a whole request's deadline: a worker killed mid-call (OOM, kill -9)
        left identical requests waiting up to GATEWAY_DEADLINE for an answer that was not coming. A holder
        still computing keeps its lock as long as it needs."""
        try:
            while self._held:
                time.sleep(self.lock_ttl / 3)  # patched by gevent: a greenlet
                now = time.monotonic()
                for lock in [k for k, taken in self._taken.items() if now - taken > self.max_hold]:
                    # Held past a whole request: its holder never unlocked (a bug of ours); let it expire.
                    self._held.pop(lock, None)
                    self._taken.pop(lock, None)
                held = list(self._held)
                if held and self._call(self.backend.extend, held, self.lock_ttl, default=_FAILED) is not _FAILED:
                    until = time.monotonic() + self.lock_ttl
                    for lock in held:
                        if lock in self._held:
                            self._held[lock] = until
        finally:
            self._renewing = False

    def unlock(self, key):
        # A plain delete: if our lock had expired and another caller's replaced it, deleting theirs costs at
        # worst one extra upstream call by their waiters, never a wrong answer.
        lock = self._lock_key(key)
        expires = self._held.pop(lock, None)
        self._taken.pop(lock, None)
        if self._call(self.backend.delete, lock, default=_FAILED) is _FAILED and expires is not None:
            # Redis is down or being left alone (see RedisGuard), so the lock stays there, for up to its TTL:
            # every identical request after the outage would wait for it that long, then find no entry.
            # Released again as soon as Redis answers.
            self._release_later(lock, expires)

    def _release_later(self, lock, expires):
        with self._releasing:
            self._unreleased[lock] = expires
            if self._releaser:
                return
            self._releaser = True
        threading.Thread(target=self._release_loop, name="gateway-cache-unlock", daemon=True).start()

    def _release_loop(self):
        while True:
            time.sleep(_RELEASE_RETRY_SECONDS)  # patched by gevent: a greenlet
            with self._releasing:
                now = time.monotonic()
                # A lock past its TTL is gone by itself, and may be another caller's by now: left alone.
                pending = [lock for lock, expires in self._unreleased.items() if expires > now]
                if not pending:
                    self._unreleased.clear()
                    self._releaser = False
                    return
            for lock in pending:
                if self._call(self.backend.delete, lock, default=_FAILED) is _FAILED:
                    break
                with self._releasing:
                    self._unreleased.pop(lock, None)

    def _locked(self, key):
        return self._call(self.backend.get, self._lock_key(key)) is not None

    def wait_for(self, key, timeout):
        """Poll for the entry another caller is computing. None when it does not appear: the lock is gone
        without an entry (its holder failed or died), `timeout` seconds passed, or the store is unreachable."""
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            # Read the lock before the entry: a holder writes the entry and then unlocks, so "no lock, then no
            # entry" means no entry is coming.
            locked = self._locked(key)
            entry = self.get(key)
            if entry is not None:
                return entry
            left = deadline - time.monotonic()
            if not locked or left <= 0:
                return None
            time.sleep(min(delay, left))  # patched by gevent: the worker serves others meanwhile
            delay = min(delay * 1.5, _POLL_MAX)

    def take_or_wait(self, key, timeout, rounds=3):
        """(entry, locked): another caller's entry, waited for; or this caller's lock to compute it. A holder that
        fails leaves no entry: its waiters then compete for the lock again, so one of them goes upstream and the
        rest keep waiting, not all at once (a struggling upstream got one call per waiter). After `rounds` such
        failures, or `timeout`, (None, False): the caller goes upstream unlocked."""
        deadline = time.monotonic() + timeout
        for _ in range(rounds):
            if self.lock(key):
                return None, True
            entry = self.wait_for(key, deadline - time.monotonic())
            if entry is not None or time.monotonic() >= deadline:
                return entry, False
        return None, False

    def get_or_compute(self, key, compute, ttl_seconds, wait_timeout=_LOCK_TTL_SECONDS):
        """(entry, hit): the stored entry, or the one `compute()` returns, computed once for simultaneous callers.

        `compute()` returns the entry to store, or None to store nothing; if it raises, nothing is stored, the
        lock is released and the exception propagates. hit is True when no upstream call was made by this
        caller (stored, or computed by another caller it waited for).
        """
        entry = self.get(key)
        if entry is not None:
            return entry, True
        entry, locked = self.take_or_wait(key, wait_timeout)
        if entry is not None:
            return entry, True
        if not locked:
            entry = compute()  # the holders failed or are too slow: answer this request ourselves
            if entry is not None:
                self.set(key, entry, ttl_seconds)
            return entry, False
        try:
            entry = compute()
            if entry is not None:
                # Before unlocking, so waiters find it (see wait_for).
                self.set(key, entry, ttl_seconds)
        finally:
            self.unlock(key)
        return entry, False
