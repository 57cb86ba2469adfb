"""The `before_request` hook that holds each key to its requests per minute, before any upstream call."""
import math

from flask import current_app, g

from gateway import metrics
from gateway.handlers.errors import ApiError


def enforce():
    key = g.api_key
    if key.rate_limit_per_minute is None:
        return
    decision = current_app.extensions["gateway"].limiter.check(key.id, key.rate_limit_per_minute)
    g.ratelimit = decision
    if not decision.allowed and decision.unknown:
        # Not the key's fault: the limits cannot be counted, and GATEWAY_RATELIMIT_FAIL_OPEN=false refuses what
        # cannot be. A 429 "this key allows N requests" would send the operator after the wrong problem.
        raise ApiError(503, "Rate limits cannot be checked right now (their store is unavailable); please try "
                       "again shortly.", "service_unavailable_error", None, "rate_limiter_unavailable",
                       headers={"Retry-After": str(decision.retry_after)})
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise ApiError(429, f"Rate limit reached for requests: this key allows {decision.limit} requests per "
                       f"minute. Please try again in {decision.retry_after}s.", "requests", None,
                       "rate_limit_exceeded", headers={"Retry-After": str(decision.retry_after)})


def headers(resp):
    decision = g.get("ratelimit")
    if decision is not None:
        resp.headers.extend((("X-RateLimit-Limit", str(decision.limit)),   # only set here: added, not looked for
                             ("X-RateLimit-Remaining", str(decision.remaining)),
                             ("X-RateLimit-Reset", str(math.ceil(decision.reset_seconds)))))
    return resp
