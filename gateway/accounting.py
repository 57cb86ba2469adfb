"""What a request cost and the row it leaves: priced from the price table, logged in the background,
counted in the metrics. Every /v1 request ends here exactly once, whatever its outcome."""
import datetime as dt
import time
from decimal import Decimal

import orjson
from flask import g, request
from werkzeug.exceptions import ClientDisconnected

from gateway import metrics
from gateway.deadline import BODY_READS
from gateway.jsonbytes import dumps
from gateway.store.pricing import Price, cost_of

SIX = Decimal("0.000001")


_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_DETAILS = ("prompt_tokens_details", "completion_tokens_details")
_MAX_COUNT = 2 ** 31  # what the log's token columns hold


def _count(value):
    return value if type(value) is int and 0 <= value < _MAX_COUNT else None


def counted(usage):
    """An upstream's usage as pricing, metrics and the log row may read it: a dict whose token counts are
    non-negative ints (in range of the log's columns) or null, any other count left out. An upstream's own
    figures are not checked anywhere before here, and "lots", 1e300 or -5 tokens must not fail a request already
    answered (a 500, the log row refused) nor be priced. Returned as it is when it is already clean (~1 µs)."""
    if type(usage) is not dict:
        return None
    for k in _COUNTS:
        v = usage.get(k)
        if v is not None and not (type(v) is int and 0 <= v < _MAX_COUNT):
            return _cleaned(usage)
    for k in _DETAILS:
        details = usage.get(k)
        if details is not None:
            if type(details) is not dict:
                return _cleaned(usage)
            for v in details.values():
                if v is not None and not (type(v) is int and 0 <= v < _MAX_COUNT):
                    return _cleaned(usage)
    return usage


def _cleaned(usage):
    out = {k: usage[k] for k in _COUNTS if _count(usage.get(k)) is not None}
    for k in _DETAILS:
        details = usage.get(k)
        if isinstance(details, dict):
            out[k] = {name: v for name, v in details.items() if _count(v) is not None}
    return out


def cost(gw, model, usage):
    """USD for `usage` on `model` (a registry Model), or None when the model has no price or the usage does not
    say both counts (see `counted`)."""
    if not usage or model is None or usage.get("prompt_tokens") is None or usage.get("completion_tokens") is None:
        return None
    if model.price is not None:   # from the GATEWAY_CONFIG file: priced by the same arithmetic as the table
        inp, out = model.price
        return cost_of(Price(None, model.name, model.provider, inp, out, None, None, None), usage)
    return gw.prices.cost(model.name, usage)


def with_earlier(gw, model, usage, earlier):
    """(usage, cost) of an answer streamed by several attempts (a continued stream, gateway/providers/resume.py):
    `usage`, the last attempt's, and `earlier`, [(model, usage)] of those given up on. The usage describes the
    answer: the prompt as first sent, the completion over every attempt. The cost is what every attempt was
    billed, each at its own model's price, prefill included. An attempt whose prompt its upstream never counted
    (an OpenAI stream cut before its usage chunk) is given the last attempt's less the prefills since it.
    (usage, cost) as they were when the last attempt counted nothing."""
    if not usage or usage.get("prompt_tokens") is None or usage.get("completion_tokens") is None:
        return usage, cost(gw, model, usage)
    last_prompt = usage["prompt_tokens"]
    parts, since = [], 0
    for earlier_model, part in reversed(earlier):
        since += part["completion_tokens"]
        prompt = part["prompt_tokens"] if part["prompt_tokens"] is not None else max(0, last_prompt - since)
        parts.append((earlier_model, {"prompt_tokens": prompt, "completion_tokens": part["completion_tokens"]}))
    parts.reverse()
    completion = usage["completion_tokens"] + since
    combined = {**usage, "prompt_tokens": parts[0][1]["prompt_tokens"], "completion_tokens": completion,
                "total_tokens": parts[0][1]["prompt_tokens"] + completion}
    costs = [cost(gw, model, usage)] + [cost(gw, m, u) for m, u in parts]
    return combined, (None if any(c is None for c in costs) else sum(costs))


def header(value):
    return str((value or Decimal(0)).quantize(SIX))


def _attempts(outcome):
    """Failed attempts, then the chain members skipped (no key, breaker open), for the log row."""
    if outcome is None or not (outcome.attempts or outcome.skipped):
        return None
    return orjson.dumps(outcome.attempts + [{**s, "skipped": True} for s in outcome.skipped]).decode()


_PEEK_BYTES = 16384  # a refused request's body is read for its model only when it is this small
_PEEK_SECONDS = 2.0  # and only for this long


def _model_asked(body):
    """The body's model, when it named one (a request refused by validation may still have)."""
    model = body.get("model") if isinstance(body, dict) else None
    return model[:200] if isinstance(model, str) and model else None


def _unread_model(request_):
    """The model of a chat request refused before its body was read (a 429), so 'report --by model' counts the
    refusal against it; only for a small body, so a refused client cannot make the gateway parse megabytes."""
    length = request_.content_length
    if request_.method != "POST" or request_.path != "/v1/chat/completions" or not length or length > _PEEK_BYTES:
        return None
    try:
        with BODY_READS.bounded_if_active(_PEEK_SECONDS, TimeoutError):  # a refused client trickling is let go
            return _model_asked(orjson.loads(request_.get_data(cache=False)))
    except ValueError:  # orjson.JSONDecodeError
        return None
    except (OSError, ClientDisconnected):  # the body did not come (GATEWAY_CLIENT_TIMEOUT), or the client left
        return None


def _loggable(value):
    """`value` as JSON text for the log row; never an exception, which would fail a request already answered
    (a body nested past what the encoders write: the request may nest up to 1,024 levels)."""
    try:
        return dumps(value).decode()
    except (TypeError, ValueError, RecursionError):
        return '"[not stored: nested too deeply to write as JSON]"'


def record(gw, status, stream=False):
    """Enqueue this request's log row and count it. Reads what the handler left on `g`."""
    # The objects behind the `g` and `request` proxies, looked up once: each proxy access costs a context
    # look-up (~2 µs here), and a row reads about twenty of them; g's attributes are then read as a dict
    # (g is a plain namespace), a look-up each rather than a method call.
    g_, request_ = g._get_current_object(), request._get_current_object()
    if g_.get("recorded"):
        return
    g_.recorded = True
    values = vars(g_)
    outcome = values.get("outcome")
    usage = values.get("usage") or {}
    model = outcome.model if outcome is not None and outcome.model is not None else None
    latency = time.perf_counter() - g_.start
    key = values.get("api_key")
    body = values.get("body") or {}
    headers = request_.headers
    row = {
        "request_id": g_.request_id,
        "api_key_id": key.id if key else None,
        "endpoint": request_.path[:100],
        "model": _model_asked(body) if "body" in values else _unread_model(request_) if status == 429 else None,
        "model_served": model.name if model else values.get("cached_model"),
        "provider": outcome.provider if outcome is not None and outcome.provider else values.get("cached_provider"),
        "original_provider": outcome.original_provider if outcome is not None else values.get("cached_provider"),
        "status_code": status,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
        "cost_usd": values.get("cost"),
        "saved_usd": values.get("saved"),
        "latency_ms": int(latency * 1000),
        "cache_hit": bool(values.get("cache_hit")),
        "failover_used": bool(outcome is not None and outcome.tried_another),  # as X-Failover says
        "error_message": (values.get("error_message") or None),
        "attempts": _attempts(outcome),
        "stream": bool(stream),
        "customer_id": (headers.get("X-Customer-Id") or "")[:200] or None,
        "feature": (headers.get("X-Feature") or "")[:200] or None,
        "end_user": (body.get("user") if isinstance(body, dict) and isinstance(body.get("user"), str) else None),
        "created_at": dt.datetime.now(dt.timezone.utc),
    }
    # Labels only from the model table: a client's made-up model names must not become metric series.
    label = row["model_served"] or (row["model"] if row["model"] in gw.registry.models else "unknown")
    metrics.observe(label, row["provider"], status, latency, usage, g_.get("cost"),
                    g_.get("ttft"), outcome, values.get("cache_result"))
    if gw.settings.log_requests:  # GATEWAY_LOG_REQUESTS=false: metrics only, no row (e.g. to measure the writer)
        if gw.settings.log_bodies and isinstance(body, dict):
            row["request_body"] = _loggable(body.get("messages"))
            if g_.get("answer") is not None:
                row["response_body"] = _loggable(g_.answer)
        gw.log_writer.enqueue(row)
