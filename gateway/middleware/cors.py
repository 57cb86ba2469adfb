"""CORS for browser clients of /v1/*: exact origins or `*` from GATEWAY_CORS_ORIGINS.

A preflight is answered before authentication (browsers send no Authorization header on it).
"""
from flask import request

EXPOSED = ("X-Request-Id, X-Provider, X-Model, X-Failover, X-Original-Provider, X-Latency-Ms, X-Cost-USD, "
           "X-Cache-Hit, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After")
ALLOWED_HEADERS = "Authorization, Content-Type, X-Customer-Id, X-Feature, X-Gateway-Fallbacks, X-Gateway-Failover, Cache-Control"


def _allowed_origin(origins, origin):
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def preflight(origins):
    """A response for a CORS preflight, or None when this is not one."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    from flask import Response
    resp = Response(status=204)
    allowed = _allowed_origin(origins, request.headers.get("Origin"))
    if allowed:
        resp.headers["Access-Control-Allow-Origin"] = allowed
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers")
        resp.headers["Access-Control-Allow-Headers"] = asked or ALLOWED_HEADERS
        resp.headers["Access-Control-Max-Age"] = "600"
        if allowed != "*":
            resp.headers["Vary"] = "Origin"
    return resp


def decorate(origins, resp):
    allowed = _allowed_origin(origins, request.headers.get("Origin"))
    if allowed:
        resp.headers["Access-Control-Allow-Origin"] = allowed
        resp.headers["Access-Control-Expose-Headers"] = EXPOSED
        if allowed != "*" and not any("origin" in v.lower() for v in resp.headers.getlist("Vary")):
            resp.headers.add("Vary", "Origin")  # a preflight has it already
    return resp
