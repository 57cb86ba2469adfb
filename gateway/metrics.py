"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before any worker starts), and /metrics sums them, so every worker counts.
"""
import bisect
import os
import threading

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
# Every worker sees the whole spool directory, so the workers' values are the same figure: their max, not sum.
LOG_SPOOL = Gauge("gateway_log_spool_bytes", "Bytes of log rows spooled to disk", multiprocess_mode="max")


class Tally:
    """What `observe` counts, kept in plain dicts and added to the Prometheus values by `flush()`. Under
    gunicorn each Prometheus value is a write into a shared file behind a lock, and a request made five or
    six of them: about 7% of a cache hit's instructions. The worker flushes every second, before each
    /metrics answer and when it stops, so a scrape lags the requests by at most a second."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}   # (counter, labels) -> amount
        self._hists = {}    # (histogram, labels) -> [observations per bucket..., sum]

    def add(self, counter, labels, amount=1):
        key = (counter, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, histogram, labels, value):
        key = (histogram, labels)
        with self._lock:
            row = self._hists.get(key)
            if row is None:
                row = self._hists[key] = [0] * (len(histogram._upper_bounds) + 1)
            row[bisect.bisect_left(histogram._upper_bounds, value)] += 1   # its bucket: the first bound >= value
            row[-1] += value

    def flush(self):
        with self._lock:
            counts, self._counts = self._counts, {}
            hists, self._hists = self._hists, {}
        for (counter, labels), amount in counts.items():
            counter.labels(*labels).inc(amount)
        for (histogram, labels), row in hists.items():
            child = histogram.labels(*labels)
            for bucket, n in zip(child._buckets, row):  # what Histogram.observe writes, n at a time
                if n:
                    bucket.inc(n)
            child._sum.inc(row[-1])


TALLY = Tally()


def observe(model, provider, status, seconds, usage=None, cost=None, ttft=None, outcome=None, cache=None):
    model = model or "none"
    provider = provider or "none"
    pair = (model, provider)
    TALLY.add(REQUESTS, (model, provider, str(status)))
    TALLY.observe(LATENCY, pair, seconds)
    if ttft is not None:
        TALLY.observe(TTFT, pair, ttft)
    if usage:
        TALLY.add(TOKENS, (model, provider, "prompt"), usage.get("prompt_tokens") or 0)
        TALLY.add(TOKENS, (model, provider, "completion"), usage.get("completion_tokens") or 0)
    if cost:
        TALLY.add(COST, pair, float(cost))
    if outcome is not None:
        for attempt in outcome.attempts:
            TALLY.add(UPSTREAM_ERRORS, (attempt["provider"], attempt["reason"]))
        if outcome.failover_used:
            TALLY.add(FAILOVERS, (outcome.original_provider, outcome.provider or "none"))
    if cache is not None:
        TALLY.add(CACHE, (cache,))


def sample_log_writer(writer):
    """The writer's gauges, set by each worker every second (and before a scrape): a worker that serves no
    scrape must not leave a stale figure behind for the others' sum or max."""
    if writer is not None:
        LOG_QUEUE.set(writer.queue_depth())
        LOG_SPOOL.set(writer.spool_bytes())


def render(gateway):
    """The exposition text: all workers' values in multiprocess mode, this process's otherwise."""
    TALLY.flush()
    for model, status in gateway.breakers.snapshot().items():
        BREAKER_OPEN.labels(model).set(1 if status == "open" else 0)
    sample_log_writer(getattr(gateway, "log_writer", None))
    if _MULTI:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY)
