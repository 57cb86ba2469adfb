"""A circuit breaker per model: after repeated failures a model is skipped for a cool-down, then probed
with one request, and closed again when the probe succeeds.

Each worker keeps its own state; when Redis is there an opening is published (a key that expires with
the cool-down) so every worker skips the model, and a worker looks at Redis at most once a second per
model, never on every request.
"""
import logging
import threading
import time

from gateway.redisguard import RedisGuard

log = logging.getLogger("gateway")

COMPONENT = "breaker"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_REMOTE_CHECK_SECONDS = 1.0


class _State:
    __slots__ = ("failures", "open_until", "probing", "checked_at", "remote_open_until")

    def __init__(self):
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        self.checked_at = 0.0
        self.remote_open_until = 0.0


class Breakers:
    def __init__(self, threshold=3, cooldown=10.0, redis=None, namespace="gw:", clock=time.time, guard=None):
        self.threshold = threshold
        self.cooldown = cooldown
        self.redis = redis
        # Every Redis call goes through the guard: a Redis fault must not stop traffic (local state still
        # works), and a Redis that hangs costs one timeout per back-off, not one per model.
        self.guard = guard or RedisGuard()
        self.namespace = namespace + "breaker:"
        self.clock = clock
        self._states = {}
        self._lock = threading.Lock()

    def _state(self, model):
        state = self._states.get(model)
        if state is None:
            state = self._states.setdefault(model, _State())
        return state

    def _remote_open_until(self, model, state, now):
        if self.redis is None or now - state.checked_at < _REMOTE_CHECK_SECONDS:
            return state.remote_open_until
        state.checked_at = now
        ms = self.guard.call(COMPONENT, self.redis.pttl, self.namespace + model)
        state.remote_open_until = now + ms / 1000.0 if ms and ms > 0 else 0.0
        return state.remote_open_until

    def status(self, model):
        now = self.clock()
        state = self._state(model)
        open_until = max(state.open_until, self._remote_open_until(model, state, now))
        if open_until > now:
            return OPEN
        if state.open_until and state.failures >= self.threshold:
            return HALF_OPEN
        return CLOSED

    def allow(self, model):
        """Whether to send this request to `model`; in half-open state only one probe at a time goes."""
        status = self.status(model)
        if status == CLOSED:
            return True
        if status == OPEN:
            return False
        with self._lock:
            state = self._state(model)
            if state.probing:
                return False
            state.probing = True
            return True

    def success(self, model):
        state = self._state(model)
        if state.failures or state.open_until:
            if state.open_until:
                log.info("breaker for %s closed: the probe succeeded", model)
            state.failures, state.open_until, state.probing, state.remote_open_until = 0, 0.0, False, 0.0
            if self.redis is not None:
                self.guard.call(COMPONENT, self.redis.delete, self.namespace + model)

    def release(self, model):
        """The probe ended without a verdict (the upstream answered, but the request was at fault):
        free the slot so the next request probes."""
        self._state(model).probing = False

    def failure(self, model):
        state = self._state(model)
        with self._lock:
            state.failures += 1
            state.probing = False
            if state.failures < self.threshold:
                return
            state.open_until = self.clock() + self.cooldown
        log.warning("breaker for %s opened for %.0f s after %d failures", model, self.cooldown, state.failures)
        if self.redis is not None:
            key, ms = self.namespace + model, int(self.cooldown * 1000)
            self.guard.call(COMPONENT, lambda: self.redis.set(key, "1", px=ms))

    def snapshot(self):
        return {model: self.status(model) for model in list(self._states)}
