"""Liveness and readiness: /healthz says the process answers, /readyz that its stores do."""
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from gateway.extensions import time_limit

bp = Blueprint("health", __name__)
# A database that has not answered `SELECT 1` in this long is down for readiness: the probe must answer
# while it hangs, not time out along with it.
_DATABASE_TIMEOUT = 2.0


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    gw = current_app.extensions["gateway"]
    checks, down = {}, []
    try:
        with time_limit(gw.engine, _DATABASE_TIMEOUT), gw.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"down: {type(e).__name__}"
        down.append("database")
    if gw.redis is None:
        checks["redis"] = "not configured (in-process stores)"
    else:
        try:
            gw.redis.ping()
            checks["redis"] = "ok"
        except Exception as e:  # noqa: BLE001
            checks["redis"] = f"down: {type(e).__name__}"
            down.append("redis")
    resp = jsonify({"status": "ready" if not down else "unavailable", "checks": checks, "down": down})
    resp.status_code = 503 if down else 200
    return resp
