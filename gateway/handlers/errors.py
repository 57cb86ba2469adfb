"""OpenAI's error shape for every failure the gateway answers, and the Flask handlers that produce it."""
import logging
import math

from flask import g, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.translate.common import UpstreamError, error_object

log = logging.getLogger("gateway")


class ApiError(Exception):
    """An error the gateway itself decides on (bad input, bad key, unknown model, ...)."""

    def __init__(self, status, message, type_="invalid_request_error", param=None, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.error = error_object(message, type_, param, code)
        self.headers = headers or {}


def error_response(status, error, headers=None):
    resp = jsonify({"error": error})
    resp.status_code = status
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


_HTTP = {
    404: ("Unknown request URL. Please check the URL and method.", "invalid_request_error", "unknown_url"),
    405: ("Method not allowed for this URL.", "invalid_request_error", "method_not_allowed"),
    413: ("Request body too large.", "invalid_request_error", "request_too_large"),
}


def register(app):
    @app.errorhandler(ApiError)
    def _api_error(e):
        g.error_message = e.error["message"]
        return error_response(e.status, e.error, e.headers)

    @app.errorhandler(UpstreamError)
    def _upstream_error(e):
        g.provider = getattr(e, "provider", None)
        g.error_message = e.error.get("message")
        headers = {}
        if e.retry_after and e.status in (429, 503) and math.isfinite(e.retry_after):
            headers["Retry-After"] = str(min(86400, max(1, math.ceil(e.retry_after))))
        if e.status in (502, 504):
            # The gateway has retried and failed over already; OpenAI's SDKs would retry a 502/504 twice more, each
            # time the whole chain again (a 504 is GATEWAY_DEADLINE spent). They read this header first. 429 and
            # 503 (with Retry-After) are still theirs to retry.
            headers["x-should-retry"] = "false"
        outcome = getattr(e, "outcome", None)
        if outcome is not None:
            g.outcome = outcome
            last = outcome.attempts[-1]["model"] if outcome.attempts else outcome.requested
            failed_over = outcome.tried_another
            headers.update({"X-Model": last, "X-Failover": "true" if failed_over else "false"})
            if failed_over:
                headers["X-Original-Provider"] = outcome.original_provider
        return error_response(e.status, e.error, headers)

    @app.errorhandler(HTTPException)
    def _http_error(e):
        g.error_message = e.description or e.name
        message, type_, code = _HTTP.get(e.code, (e.description or e.name, "invalid_request_error", None))
        if e.code == 413:
            message = f"Request body too large: the limit is {app.config['MAX_CONTENT_LENGTH']} bytes."
        if e.code == 404:
            message = f"Unknown request URL: {request.method} {request.path}. Please check the URL and method."
        resp = error_response(e.code, error_object(message, type_, None, code))
        if e.code == 405 and getattr(e, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(e.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(e):
        rid = getattr(g, "request_id", "unknown")
        log.exception("unhandled error in request %s", rid)
        g.error_message = f"internal error: {type(e).__name__}"
        message = f"The gateway had an internal error processing your request (request id {rid})."
        return error_response(500, error_object(message, "server_error", None, None))
