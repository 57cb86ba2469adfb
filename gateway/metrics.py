"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before any worker starts), and /metrics sums them, so every worker counts.
"""
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_MULTI = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter("gateway_requests_total", "Requests answered", ["model", "provider", "status"])
LATENCY = Histogram("gateway_request_latency_seconds", "Time to the whole answer", ["model", "provider"],
                    buckets=_LATENCY)
TTFT = Histogram("gateway_time_to_first_token_seconds", "Time to a stream's first event", ["model", "provider"],
                 buckets=_LATENCY)
TOKENS = Counter("gateway_tokens_total", "Tokens", ["model", "provider", "kind"])
COST = Counter("gateway_cost_usd_total", "Spend in USD", ["model", "provider"])
CACHE = Counter("gateway_cache_requests_total", "Cache look-ups", ["result"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by the rate limiter")
FAILOVERS = Counter("gateway_failovers_total", "Requests answered by another model than asked",
                    ["from_provider", "to_provider"])
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Failed upstream attempts", ["provider", "reason"])
MALFORMED = Counter("gateway_malformed_events_total", "Upstream stream events skipped as malformed", ["provider"])
BREAKER_OPEN = Gauge("gateway_breaker_open", "1 while a model's circuit breaker is open", ["model"],
                     multiprocess_mode="max")
LOG_QUEUE = Gauge("gateway_log_queue_depth", "Log rows waiting to be written", multiprocess_mode="livesum")
LOG_SPOOL = Gauge("gateway_log_spool_bytes", "Bytes of log rows spooled to disk", multiprocess_mode="livesum")


def observe(model, provider, status, seconds, usage=None, cost=None, ttft=None, outcome=None):
    model = model or "none"
    provider = provider or "none"
    REQUESTS.labels(model, provider, str(status)).inc()
    LATENCY.labels(model, provider).observe(seconds)
    if ttft is not None:
        TTFT.labels(model, provider).observe(ttft)
    if usage:
        TOKENS.labels(model, provider, "prompt").inc(usage.get("prompt_tokens") or 0)
        TOKENS.labels(model, provider, "completion").inc(usage.get("completion_tokens") or 0)
    if cost:
        COST.labels(model, provider).inc(float(cost))
    if outcome is not None:
        for attempt in outcome.attempts:
            UPSTREAM_ERRORS.labels(attempt["provider"], attempt["reason"]).inc()
        if outcome.failover_used:
            FAILOVERS.labels(outcome.original_provider, outcome.provider or "none").inc()


def render(gateway):
    """The exposition text: all workers' values in multiprocess mode, this process's otherwise."""
    for model, status in gateway.breakers.snapshot().items():
        BREAKER_OPEN.labels(model).set(1 if status == "open" else 0)
    writer = getattr(gateway, "log_writer", None)
    if writer is not None:
        LOG_QUEUE.set(writer.queue_depth())
        LOG_SPOOL.set(writer.spool_bytes())
    if _MULTI:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY)
