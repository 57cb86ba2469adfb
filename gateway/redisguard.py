"""Counts Redis failures per component and logs them at most once per interval, not once per request.

When Redis goes away every request fails the same way; a WARNING per request would drown the log (and cost
CPU) exactly when someone needs to read it. So a component's first failure is logged at once, then at most
one line per `interval` carries the count since the previous line, and one line marks the recovery.

The guard holds no connection state: redis-py reconnects on the next command by itself, so recovery needs
nothing from here beyond noticing it. After a failure, `skip` tells callers to leave Redis alone for
`backoff` seconds: a Redis that hangs instead of refusing would otherwise cost every request a socket
timeout; this way it costs one timeout per `backoff` per worker, and the first call after it finds out
whether Redis is back. A Redis found unreachable (a timeout, a refused or dropped connection) is left alone
by every component, not only by the one that found out: each asking for itself, a request paid a timeout
for the rate limiter, another for the cache and one more per model for the breakers (1.25 s a request).
An error reply (out of memory, a missing script) is one component's: the others keep asking.
"""
import logging
import threading
import time

log = logging.getLogger("gateway.redis")


class RedisGuard:
    def __init__(self, interval=30.0, logger=None, clock=time.monotonic, backoff=1.0):
        self.interval = interval
        self.backoff = backoff
        self._failed_at = {}        # component -> when it last failed
        self.failures = {}          # component -> failures since start (for metrics)
        self._log = logger or log
        self._clock = clock
        self._lock = threading.Lock()
        self._down = {}             # component -> [failures not yet logged, when last logged, last error]
        self._unreachable_at = None  # when any component last found Redis unreachable

    def skip(self, component):
        """True within `backoff` seconds of a failure (of any component's, when Redis was unreachable): answer
        without Redis this time."""
        failed_at = self._failed_at.get(component)
        unreachable_at = self._unreachable_at
        if failed_at is None and unreachable_at is None:
            return False
        now = self._clock()
        return any(at is not None and now - at < self.backoff for at in (failed_at, unreachable_at))

    def call(self, component, fn, *args, default=None, catch=(Exception,)):
        """`fn(*args)`'s reply for `component`, or `default` when Redis fails (an exception in `catch`) or is
        being left alone after a failure (`skip`): the one way each component talks to Redis."""
        if self.skip(component):
            return default
        try:
            reply = fn(*args)
        except catch as exc:
            self.failed(component, exc)
            return default
        self.ok(component)
        return reply

    def failed(self, component, exc):
        now = self._clock()
        self._failed_at[component] = now
        if _unreachable(exc):
            self._unreachable_at = now
        with self._lock:
            self.failures[component] = self.failures.get(component, 0) + 1
            state = self._down.get(component)
            if state is None:
                state = self._down[component] = [0, None, None]
            state[0] += 1
            state[2] = exc
            if state[1] is not None and now - state[1] < self.interval:
                return
            count, state[0], state[1] = state[0], 0, now
        self._log.warning("redis unavailable for %s: %d failure(s) since the last report; "
                          "serving without it (last error: %s: %s)",
                          component, count, type(exc).__name__, exc)

    def ok(self, component):
        # Called on every successful Redis call: the common case must not take the lock.
        self._unreachable_at = None  # Redis answered: whoever found it unreachable, it is back
        if component not in self._down:
            return
        self._failed_at.pop(component, None)
        with self._lock:
            state = self._down.pop(component, None)
        if state is not None:
            # At the outage line's level, so whoever filters the log down to one sees the other.
            self._log.warning("redis is back for %s (%d failure(s) since the last report)", component, state[0])

    def is_down(self, component):
        """True between a failure and the next success: for health checks and metrics."""
        return component in self._down


def _unreachable(exc):
    """Whether `exc` says Redis cannot be reached (rather than that it refused one command)."""
    import redis
    return isinstance(exc, (OSError, redis.ConnectionError, redis.TimeoutError))
