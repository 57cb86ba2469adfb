"""POST /v1/chat/completions: validate, answer from the cache or through the failover manager,
price the answer, and stream it or send it whole."""
import logging
import select
import socket
import time
from decimal import Decimal

import orjson
from flask import Blueprint, Response, current_app, g, request, stream_with_context
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData, ParseException
from werkzeug.exceptions import RequestEntityTooLarge

from gateway import accounting, metrics
from gateway.cache.exact import cache_key
from gateway.cache.replay import Accumulator, replay
from gateway.deadline import BODY_READS
from gateway.handlers.errors import ApiError
from gateway.handlers.validation import validate_chat
from gateway.jsonbytes import dumps
from gateway.translate.common import UpstreamError, error_object, new_completion_id, now

log = logging.getLogger("gateway.chat")

bp = Blueprint("chat", __name__)
DONE = b"data: [DONE]\n\n"
# gunicorn's errors for a body it cannot read; the chunk ones are IOErrors before gunicorn 24, ParseExceptions since.
_BROKEN_BODY = (ParseException, NoMoreData, InvalidChunkSize, ChunkMissingTerminator)


def _body_bytes():
    """The body, or the error its reading earned: 408 when it does not arrive in time (each wait is bounded by
    GATEWAY_CLIENT_TIMEOUT, in gateway/serving.py, and under gevent the whole read by GATEWAY_DEADLINE, so a
    client sending a byte every few seconds cannot hold a connection for ever), 400 when its framing is broken
    (chunked encoding gunicorn cannot read, a body shorter than its Content-Length)."""
    try:
        with BODY_READS.bounded_if_active(current_app.extensions["gateway"].settings.deadline, TimeoutError):
            return _read_body()
    except TimeoutError:
        raise ApiError(408, "The request body did not arrive in time.", code="request_timeout") from None
    except _BROKEN_BODY as e:
        raise ApiError(400, f"The request body could not be read: {type(e).__name__}.",
                       code="invalid_request") from None


def _read_body():
    """The request body, at most MAX_CONTENT_LENGTH bytes (413 past it). From a server that ends the input
    stream itself (gunicorn sets wsgi.input_terminated, and de-chunks a chunked body) it is read straight from
    the stream: a chunked body has no Content-Length to check first, so one byte past the limit is asked for
    and its arrival is the 413 (werkzeug's wrapped stream would stop at the limit and hand back a cut body).
    Otherwise werkzeug reads it, answering 413 on a Content-Length past the limit."""
    environ, length = request.environ, request.content_length
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if "wsgi.input_terminated" not in environ or (length is not None and limit is not None and length > limit):
        return request.get_data(cache=False)
    if length is not None:
        data = environ["wsgi.input"].read(length)
        if len(data) < length:  # the client closed its side early: what came is not the request it meant
            raise ApiError(400, f"The request body ended after {len(data)} of its {length} bytes (Content-Length).",
                           code="invalid_request")
        return data
    if limit is None:
        return environ["wsgi.input"].read()
    data = environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def parse_json(raw):
    if not raw:
        raise ApiError(400, "The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"We could not parse the JSON body of your request: {e}.", code="invalid_json") from None


def _header_list(name):
    raw = request.headers.get(name)
    if raw is None:
        return None
    return [m.strip() for m in raw.split(",") if m.strip()]


def _latency_ms():
    return int((time.perf_counter() - g.start) * 1000)


def _data(obj):
    return b"data: " + dumps(obj) + b"\n\n"


# Bodies this worker has validated, with their cache keys per scope. A cache hit is by definition a body
# seen before, and validating it (marshmallow) and hashing it again were ~15% of a hit's CPU. The raw bytes are
# the memo's key, so only a byte-for-byte identical body skips them; bodies over _SEEN_BYTES are not kept, and
# the memo starts over past _SEEN_BODIES entries (at most ~1 MB).
_SEEN_BODIES, _SEEN_BYTES = 256, 4096
_seen = {}  # raw body -> {scope: cache key}


def _validated(raw, body):
    """Validate `body` (parsed from `raw`) unless these bytes were valid before; their per-scope cache keys."""
    keys = _seen.get(raw)
    if keys is None:
        validate_chat(body)
        keys = {}
        if len(raw) <= _SEEN_BYTES:
            if len(_seen) >= _SEEN_BODIES:
                _seen.clear()
            _seen[raw] = keys
    return keys


def _cache_key(gw, body, key, headers, known):
    """(the cache key for this request or None when the cache is off for it, whether it only refreshes).

    As in HTTP (and LiteLLM's and Portkey's force-refresh), `Cache-Control: no-cache` asks for a fresh answer,
    which then replaces the stored one; `no-store` keeps the request out of the cache both ways."""
    if not key.cache_enabled:
        return None, False
    directives = (headers.get("Cache-Control") or "").lower()
    if "no-store" in directives:
        return None, False
    if body.get("logprobs"):
        return None, False  # a stored entry does not carry logprobs across streamed and plain answers
    scope = "global" if gw.settings.cache_shared else str(key.id)
    found = known.get(scope)
    if found is None:
        found = known[scope] = cache_key(body, scope)
    return found, found is not None and "no-cache" in directives  # None: a body too deep to key


def _left():
    """Seconds of GATEWAY_DEADLINE this request has left (waiting for a cache entry included)."""
    return max(0.0, g.deadline - time.monotonic())


@bp.post("/v1/chat/completions")
def chat_completions():
    gw = current_app.extensions["gateway"]
    g_ = g._get_current_object()  # each access through a proxy is a context look-up
    raw = _body_bytes()
    body = g_.body = parse_json(raw)  # so a request that validation refuses is still logged with its model
    known = _validated(raw, body)
    model = gw.registry.resolve(body["model"])
    if model is None:
        raise ApiError(404, f"The model `{body['model']}` does not exist or is not routed by this gateway.",
                       param="model", code="model_not_found")
    key, refresh = _cache_key(gw, body, g_.api_key, request.headers, known)
    if body.get("stream"):
        return _stream(gw, body, model, key, refresh)
    return _complete(gw, body, model, key, refresh)


def _run(gw, body, model, stream):
    failover = (request.headers.get("X-Gateway-Failover") or "on").strip().lower() not in ("off", "false", "0")
    id_, created = new_completion_id(), now()
    result, outcome = gw.manager.run(body, model, id_, created, stream,
                                     fallbacks=_header_list("X-Gateway-Fallbacks"), failover=failover,
                                     deadline=g.deadline)
    g.outcome = outcome
    return result, outcome


def _too_old(gw, entry):
    """With GATEWAY_CACHE_SHARED an entry lives as long as the TTL of the key that wrote it: a key whose own TTL
    is shorter must not be served it past that."""
    stored = entry.get("stored_at")  # none in entries written before it was kept: taken as fresh
    return gw.settings.cache_shared and stored is not None and time.time() - stored > g.api_key.cache_ttl_seconds


def _entry(completion, outcome, cost):
    return {"completion": completion, "provider": outcome.provider, "model": outcome.model.name,
            "cost_usd": str(cost) if cost is not None else None, "created": completion.get("created"),
            "stored_at": time.time()}


# An answer from a fallback model is not stored: the cache holds answers of the model asked for. Stored, it
# would answer that model's requests for the whole TTL after its provider recovered, and a request that turns
# failover off (X-Gateway-Failover: off) would be handed another model's answer.

def _complete(gw, body, model, key, refresh=False):
    g_ = g._get_current_object()

    def compute():
        completion, outcome = _run(gw, body, model, stream=False)
        g_.usage = accounting.counted(completion.get("usage"))
        g_.cost = accounting.cost(gw, outcome.model, g_.usage)
        g_.entry = _entry(completion, outcome, g_.cost)
        return None if outcome.failover_used else g_.entry  # not stored: see above

    if key is None or refresh:
        entry, hit = compute(), False
        if entry is not None and refresh:
            gw.cache.set(key, entry, g_.api_key.cache_ttl_seconds)
        entry = g_.entry
        key = None  # the cache was not read: no X-Cache-Hit
    else:
        entry, hit = gw.cache.get_or_compute(key, compute, g_.api_key.cache_ttl_seconds, wait_timeout=_left())
        if hit and _too_old(gw, entry):
            entry, hit = compute(), False
            if entry is not None:
                gw.cache.set(key, entry, g_.api_key.cache_ttl_seconds)
        entry = entry or g_.entry
    completion = entry["completion"]
    if hit:
        completion = {**completion, "id": new_completion_id(), "created": now()}
        _as_cache_hit(entry, completion.get("usage"))
    cost = g_.get("cost")
    completion["cost_usd"] = float(cost) if cost is not None else None
    completion["latency_ms"] = _latency_ms()
    g_.answer = [c.get("message") for c in completion.get("choices") or ()]
    resp = Response(dumps(completion), mimetype="application/json")
    _route_headers(gw, resp, entry, hit, key)
    return resp


def _as_cache_hit(entry, usage):
    g_ = g._get_current_object()
    g_.cache_hit = True
    g_.usage = accounting.counted(usage)
    g_.cost = Decimal(0)
    g_.saved = entry.get("cost_usd")
    g_.cached_model, g_.cached_provider = entry.get("model"), entry.get("provider")


def _route_headers(gw, resp, entry, hit, key):
    """The routing headers of a response just built (none of them set yet: added, not looked for)."""
    g_ = g._get_current_object()
    outcome = g_.get("outcome")
    if hit or outcome is None:
        route = [("X-Provider", entry["provider"]), ("X-Model", entry["model"]), ("X-Failover", "false")]
    else:
        route = [("X-Provider", outcome.provider), ("X-Model", outcome.model.name),
                 ("X-Failover", "true" if outcome.failover_used else "false")]
        if outcome.failover_used:
            route.append(("X-Original-Provider", outcome.original_provider))
    if key is not None and (hit or not gw.cache.unavailable()):
        route.append(("X-Cache-Hit", "exact" if hit else "miss"))  # only when the cache was consulted
        g_.cache_result = "hit" if hit else "miss"
    if g_.get("cost") is not None:   # unpriced: no header rather than a false zero
        route.append(("X-Cost-USD", accounting.header(g_.cost)))
    route.append(("X-Latency-Ms", str(_latency_ms())))
    resp.headers.extend(route)


def _sse_response(gen):
    g.deferred = True  # the row is written when the stream ends, not when the headers go
    resp = Response(stream_with_context(gen), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


def _stream(gw, body, model, key, refresh=False):
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    cache, locked = gw.cache, False
    if key is not None and not refresh:
        entry = cache.get(key)
        if entry is not None and _too_old(gw, entry):
            entry = None
        if entry is None:
            entry, locked = cache.take_or_wait(key, _left())
            if entry is not None and _too_old(gw, entry):
                entry = None
        if entry is not None:
            _as_cache_hit(entry, entry["completion"].get("usage"))
            chunks = replay(entry["completion"], new_completion_id(), now(), include_usage)
            resp = _sse_response(_replay(gw, chunks, include_usage))
            _route_headers(gw, resp, entry, True, key)
            return resp
    try:
        upstream, outcome = _run(gw, body, model, stream=True)
    except BaseException:
        if locked:
            cache.unlock(key)
        raise
    g.ttft = time.perf_counter() - g.start
    sock = request.environ.get("gunicorn.socket")
    if sock is not None and hasattr(upstream, "still_wanted"):
        upstream.still_wanted = lambda: _connected(sock)  # no continuation is bought for a client that has left
    resp = _sse_response(_relay(gw, upstream, include_usage, key if locked or refresh else None, locked))
    _route_headers(gw, resp, None, False, None if refresh else key)   # no X-Cost-USD yet: the usage chunk has it
    return resp


def _connected(sock):
    """Whether the client is still there: nothing to read, or something (a pipelined request), but not the end
    of its side. Looked at only before a continuation is asked for: a write to a client that has gone fails
    only at the next event, after the gateway has paid for one more upstream call."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return True
        return sock.recv(1, socket.MSG_PEEK) != b""
    except (OSError, ValueError):
        return False


def _replay(gw, chunks, include_usage):
    try:
        for c in chunks:
            if include_usage and not c["choices"]:
                c = {**c, "cost_usd": 0.0}
            yield _data(c)
        yield DONE
    finally:
        accounting.record(gw, 200, stream=True)


def _relay(gw, upstream, include_usage, key, locked=False):
    """Relay the upstream's chunks as they come; price, cache and log the answer when it ends: stored under
    `key` if given, and then the single-flight lock released if this request holds it (`locked`)."""
    acc = Accumulator() if key is not None or gw.settings.log_bodies else None
    status, finished = 200, False
    try:
        for c in upstream:
            if acc is not None:
                acc.add(c)
            yield _data(c)
        g.usage = accounting.counted(upstream.state.usage)
        earlier = getattr(upstream, "earlier", None)
        if earlier:  # a continued stream: every attempt counted, not only the last
            g.usage, g.cost = accounting.with_earlier(gw, g.outcome.model, g.usage, earlier)
        else:
            g.cost = accounting.cost(gw, g.outcome.model, g.usage)
        if include_usage:
            last = upstream.state.usage_chunk()
            if last is not None:
                if earlier and g.usage:
                    last["usage"] = {**(last.get("usage") or {}), **g.usage}
                last["cost_usd"] = float(g.cost) if g.cost is not None else None
                yield _data(last)
        yield DONE
        finished = True
    except UpstreamError as e:
        # Headers are gone: the failure reaches the client as an error event, never as a clean end.
        status, g.error_message = e.status, e.error.get("message")
        yield _data({"error": e.error})
    except GeneratorExit:
        status, g.error_message = 499, "client closed the connection"
        raise
    except Exception:  # noqa: BLE001 - a bug of ours mid-stream: the client still gets an error event and an end
        log.exception("stream relay failed")
        status, g.error_message = 500, "the gateway failed while relaying the stream"
        yield _data({"error": error_object(f"The gateway had an internal error while relaying this stream "
                                           f"(request {g.request_id}).", "server_error", None, None)})
    finally:
        upstream.close()
        if upstream.malformed:
            metrics.MALFORMED.labels(g.outcome.provider or "none").inc(upstream.malformed)
        if acc is not None and gw.settings.log_bodies:
            g.answer = [c.get("message") for c in acc.completion(None)["choices"]]
        if key is not None:
            whole = finished and acc.complete and len(acc.choices) == (g.body.get("n") or 1)
            # Not an answer with events skipped as malformed: the client got it less what they held, and
            # the next identical request must not be served that copy.
            if whole and not upstream.resumed_on and not g.outcome.failover_used and not upstream.malformed:
                entry = _entry(acc.completion(g.usage), g.outcome, g.get("cost"))
                if locked:
                    gw.cache.set_async(key, entry, g.api_key.cache_ttl_seconds, unlock=True)
                else:  # a refresh, which holds no lock: stored now, after the client has its [DONE]
                    gw.cache.set(key, entry, g.api_key.cache_ttl_seconds)
            elif locked:
                gw.cache.unlock(key)
        accounting.record(gw, status, stream=True)
