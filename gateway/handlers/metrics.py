"""GET /metrics for Prometheus. With GATEWAY_METRICS_TOKEN set it needs `Authorization: Bearer <token>`;
without it, only loopback clients (a scraper on the same host, or nginx not forwarding /metrics) may read."""
import hmac

from flask import Blueprint, Response, current_app, request

from gateway import metrics
from gateway.handlers.errors import ApiError

bp = Blueprint("metrics", __name__)
_LOOPBACK = {"127.0.0.1", "::1"}


def _allowed(token):
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    return request.remote_addr in _LOOPBACK and "X-Forwarded-For" not in request.headers


@bp.get("/metrics")
def scrape():
    gw = current_app.extensions["gateway"]
    if not _allowed(gw.settings.metrics_token):
        raise ApiError(403, "Metrics are readable with GATEWAY_METRICS_TOKEN, or from this host only.",
                       "permission_error", None, "forbidden")
    return Response(metrics.render(gw), mimetype="text/plain; version=0.0.4")
