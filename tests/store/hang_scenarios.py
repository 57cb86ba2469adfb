"""PostgreSQL hanging under gevent, as in a gunicorn worker: run as
`python -m tests.store.hang_scenarios SCENARIO DATABASE_URL SPOOL_DIR`, prints one JSON line of measurements.

The database is reached through a BlackHoleProxy that is told to stop forwarding: a network partition, where
packets vanish and nothing is refused. Every step runs under a 30 s guard, so a hang is reported
("hung": the step), not waited on.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from sqlalchemy import event, text  # noqa: E402

from gateway.extensions import make_engine  # noqa: E402
from tests.blackhole import BlackHoleProxy  # noqa: E402

GUARD = 30


class Hung(BaseException):  # not caught by the code under test's `except Exception`
    pass


def timed(step, fn):
    """(seconds, result or the exception raised) of fn(); raises Hung(step) past the guard."""
    start = time.monotonic()
    try:
        with gevent.Timeout(GUARD, Hung(step)):
            try:
                result = fn()
            except Hung:
                raise
            except Exception as e:  # noqa: BLE001 - measured, not handled
                result = e
    finally:
        elapsed = round(time.monotonic() - start, 2)
    return elapsed, result


def name(result):
    return type(result).__name__


def engine_scenario(direct, proxied, proxy, out, spool_dir):
    from gateway.extensions import time_limit
    invalidated = []
    event.listen(proxied, "invalidate", lambda _c, _r, exc: invalidated.append(name(exc)))
    with proxied.connect() as conn:
        first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    proxy.hold()

    def pooled():
        with time_limit(proxied, 1.0), proxied.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar()
    out["pooled_seconds"], result = timed("pooled", pooled)
    out["pooled_error"], out["invalidated"] = name(result), invalidated

    fresh = make_engine(proxied.url.render_as_string(hide_password=False))  # an empty pool: must connect

    def connect():
        with fresh.connect():
            pass
    out["connect_seconds"], result = timed("connect", connect)
    out["connect_error"] = name(result)
    proxy.resume()
    with proxied.connect() as conn:
        out["after_resume"] = conn.execute(text("SELECT 42")).scalar()
        out["new_backend"] = conn.execute(text("SELECT pg_backend_pid()")).scalar() != first_pid


def keys_scenario(direct, proxied, proxy, out, spool_dir):
    from gateway.store.keys import KeyCache, KeyStoreUnavailable, create_key, revoke_key
    confirmed, confirmed_id = create_key(direct, "confirmed before the partition")
    unseen, _ = create_key(direct, "never seen by this worker")
    cache = KeyCache(proxied, ttl=0.5)
    assert cache.lookup(confirmed).id == confirmed_id
    proxy.hold()
    time.sleep(0.6)  # its entry has expired: the next request reloads it
    seconds, results = [], []
    for _ in range(4):  # the reload, then requests meanwhile and at the retries after it
        elapsed, result = timed("confirmed", lambda: cache.lookup(confirmed))
        seconds.append(elapsed)
        results.append(result.id == confirmed_id if not isinstance(result, Exception) else name(result))
        time.sleep(0.7)
    out["confirmed_seconds"], out["confirmed_results"] = seconds, results

    def refused():
        try:
            cache.lookup(unseen)
        except KeyStoreUnavailable:
            return "KeyStoreUnavailable"
    out["unseen_seconds"], out["unseen_result"] = timed("unseen", refused)
    proxy.resume()
    revoke_key(direct, str(confirmed_id))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and cache.lookup(confirmed) is not None:
        time.sleep(0.2)
    out["revoked_after_resume"] = cache.lookup(confirmed) is None


def prices_scenario(direct, proxied, proxy, out, spool_dir):
    from gateway.store.pricing import PriceBook
    book = PriceBook(proxied)
    with proxied.connect() as conn:
        conn.execute(text("SELECT 1"))  # a pooled connection, to be caught by the partition
    proxy.hold()
    out["first_load_seconds"], price = timed("price", lambda: book.price("gpt-4o-mini"))
    out["first_load_result"] = None if price is None else name(price)
    proxy.resume()


def readyz_scenario(direct, proxied, proxy, out, spool_dir):
    from gateway import config, create_app
    url = proxied.url.render_as_string(hide_password=False)
    app = create_app(config.load({"DATABASE_URL": url, "GATEWAY_SPOOL_DIR": spool_dir}))
    client = app.test_client()
    out["before"] = client.get("/readyz").status_code
    proxy.hold()
    out["seconds"], resp = timed("readyz", lambda: client.get("/readyz"))
    out["status"] = resp.status_code if not isinstance(resp, Exception) else name(resp)
    out["database"] = resp.get_json()["checks"]["database"] if not isinstance(resp, Exception) else None
    proxy.resume()
    out["after"] = client.get("/readyz").status_code


def logwriter_scenario(direct, proxied, proxy, out, spool_dir):
    import glob
    import secrets

    from sqlalchemy import func, select

    from gateway.store.logwriter import LogWriter, database as writer_database
    from gateway.store.models import gateway_logs
    writer_database._WRITE_TIMEOUT, writer_database._PROBE_TIMEOUT = 1.5, 0.5  # the real ones are seconds more
    writer = LogWriter(proxied, spool_dir, flush_interval=0.05, probe_seconds=0.3)
    prefix = "req_hang_" + secrets.token_hex(4)
    ids = [f"{prefix}_{i}" for i in range(6)]

    def row(request_id):
        return {"request_id": request_id, "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini",
                "status_code": 200, "latency_ms": 5}
    writer.enqueue(row(ids[0]))
    assert writer.flush(10) and writer.written == 1
    proxy.hold()
    start = time.monotonic()
    for request_id in ids[1:]:
        writer.enqueue(row(request_id))
        time.sleep(0.1)
    while writer.spooled < 5 and time.monotonic() - start < GUARD:
        time.sleep(0.05)
    out["spooled"], out["spooled_after"] = writer.spooled, round(time.monotonic() - start, 2)
    out["in_memory"] = writer.queue_depth()
    proxy.resume()
    start = time.monotonic()

    def stored():
        with direct.connect() as conn:
            return conn.execute(select(gateway_logs.c.request_id, func.count())
                                .where(gateway_logs.c.request_id.like(prefix + "%"))
                                .group_by(gateway_logs.c.request_id)).all()
    while len(stored()) < len(ids) and time.monotonic() - start < GUARD:
        time.sleep(0.1)
    out["replayed_after"] = round(time.monotonic() - start, 2)
    out["stored"] = dict(stored())
    out["ids"] = ids
    writer.stop(5)
    out["spool_files_left"] = [f for f in glob.glob(spool_dir + "/*.jsonl") if not f.split("/")[-1].startswith("rejected")]


def main():
    scenario, database_url, spool_dir = sys.argv[1:4]
    direct = make_engine(database_url)
    host, port = database_url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    proxy = BlackHoleProxy(host, int(port))
    proxied = make_engine(proxy.url(database_url))
    out = {}
    try:
        globals()[scenario + "_scenario"](direct, proxied, proxy, out, spool_dir)
    except Hung as e:
        out["hung"] = str(e)
    finally:
        proxy.resume()
        print(json.dumps(out), flush=True)
        proxy.close()


if __name__ == "__main__":
    main()
