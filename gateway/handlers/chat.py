"""POST /v1/chat/completions: validate, route through the failover manager, answer or stream."""
import time

import orjson
from flask import Blueprint, Response, current_app, g, request, stream_with_context

from gateway.handlers.errors import ApiError
from gateway.handlers.validation import validate_chat
from gateway.translate.common import UpstreamError, new_completion_id, now

bp = Blueprint("chat", __name__)


def parse_json():
    raw = request.get_data(cache=False)
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


def _route_headers(outcome):
    headers = {"X-Provider": outcome.provider, "X-Model": outcome.model.name,
               "X-Failover": "true" if outcome.failover_used else "false"}
    if outcome.failover_used:
        headers["X-Original-Provider"] = outcome.original_provider
    return headers


def _latency_ms():
    return int((time.perf_counter() - g.start) * 1000)


@bp.post("/v1/chat/completions")
def chat_completions():
    gw = current_app.extensions["gateway"]
    body = validate_chat(parse_json())
    model = gw.registry.resolve(body["model"])
    if model is None:
        raise ApiError(404, f"The model `{body['model']}` does not exist or is not routed by this gateway.",
                       param="model", code="model_not_found")
    stream = bool(body.get("stream"))
    failover = (request.headers.get("X-Gateway-Failover") or "on").strip().lower() not in ("off", "false", "0")
    id_, created = new_completion_id(), now()
    result, outcome = gw.manager.run(body, model, id_, created, stream,
                                     fallbacks=_header_list("X-Gateway-Fallbacks"), failover=failover)
    g.outcome = outcome
    if not stream:
        resp = Response(orjson.dumps(result), mimetype="application/json")
        resp.headers.update(_route_headers(outcome))
        resp.headers["X-Latency-Ms"] = str(_latency_ms())
        return resp
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    resp = Response(stream_with_context(_sse(result, include_usage)), mimetype="text/event-stream")
    resp.headers.update(_route_headers(outcome))
    resp.headers["X-Latency-Ms"] = str(_latency_ms())  # time to the first upstream event
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


def _sse(upstream, include_usage):
    try:
        for chunk in upstream:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        if include_usage:
            usage = upstream.state.usage_chunk()
            if usage is not None:
                yield b"data: " + orjson.dumps(usage) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except UpstreamError as e:
        # Headers are gone: the failure reaches the client as an error event, never as a clean end.
        yield b"data: " + orjson.dumps({"error": e.error}) + b"\n\n"
    finally:
        upstream.close()
