"""PostgreSQL partitioned away from a real gunicorn + gevent gateway: packets vanish, nothing is refused. The
README's outage behaviour must hold, with the shipped time bounds: known keys keep working, others get a
quick 503, /readyz answers 503, log rows are spooled and replayed exactly once when the database is back."""
import glob
import json
import os
import time

import requests
from sqlalchemy import func, select

from gateway import config
from gateway.extensions import make_engine
from gateway.store.keys import create_key
from gateway.store.migrate import upgrade
from gateway.store.models import gateway_logs
from tests.blackhole import BlackHoleProxy
from tests.conftest import fresh_database
from tests.integration.conftest import stop

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
BOUND = 8  # seconds: the look-up and readiness bounds are 2 s, a request waits for at most one of them


def stored(engine, ids):
    with engine.connect() as conn:
        rows = conn.execute(select(gateway_logs.c.request_id, func.count())
                            .where(gateway_logs.c.request_id.in_(list(ids))).group_by(gateway_logs.c.request_id))
        return dict(rows.all())


def spooled(spool_dir):
    ids = []
    for path in glob.glob(os.path.join(spool_dir, "*.jsonl")):
        if os.path.basename(path).startswith(("spool-", "claimed-")):
            with open(path) as f:
                ids += [json.loads(line)["request_id"] for line in f if line.strip()]
    return ids


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()


def test_a_partitioned_database_is_an_outage_not_a_hang(simulator, start_gateway, tmp_path):
    spool_dir = str(tmp_path / "spool")
    with fresh_database("gateway_pghang") as raw:
        url = config.database_url(raw)
        upgrade(url)
        direct = make_engine(url)
        proxy = BlackHoleProxy("127.0.0.1", int(url.rsplit("@", 1)[1].split("/")[0].split(":")[1]))
        gw = start_gateway(simulator, database_url=proxy.url(url), GATEWAY_SPOOL_DIR=spool_dir)
        try:
            unseen, _ = create_key(direct, "never used before the partition")
            first = requests.post(gw.base_url + "/v1/chat/completions", json=CHAT, headers=gw.headers, timeout=10)
            assert first.status_code == 200
            assert wait_for(lambda: stored(direct, [first.headers["X-Request-Id"]]), 10)

            proxy.hold()
            held_ids, seconds = [], []
            for _ in range(12):  # past two key reloads (GATEWAY_KEY_CACHE_SECONDS: 5)
                start = time.monotonic()
                resp = requests.post(gw.base_url + "/v1/chat/completions", json=CHAT, headers=gw.headers, timeout=40)
                seconds.append(round(time.monotonic() - start, 2))
                assert resp.status_code == 200, resp.text
                held_ids.append(resp.headers["X-Request-Id"])
                time.sleep(max(0.0, 1 - seconds[-1]))
            print("confirmed key, seconds per request:", seconds)
            assert max(seconds) < BOUND

            start = time.monotonic()
            ready = requests.get(gw.base_url + "/readyz", timeout=40)
            ready_seconds = time.monotonic() - start
            print(f"/readyz: {ready.status_code} in {ready_seconds:.2f} s: {ready.json()}")
            assert ready.status_code == 503 and ready.json()["down"] == ["database"] and ready_seconds < BOUND

            start = time.monotonic()
            refused = requests.get(gw.base_url + "/v1/models", headers={"Authorization": f"Bearer {unseen}"},
                                   timeout=40)
            refused_seconds = time.monotonic() - start
            print(f"unseen key: {refused.status_code} in {refused_seconds:.2f} s")
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1" and refused_seconds < BOUND
            held_ids.append(refused.headers["X-Request-Id"])  # every /v1 request leaves a row, a 503 too

            start = time.monotonic()
            assert wait_for(lambda: set(held_ids) <= set(spooled(spool_dir)), 30), \
                f"not spooled: {set(held_ids) - set(spooled(spool_dir))}"
            print(f"every held row spooled {time.monotonic() - start:.2f} s after the last request")
            assert stored(direct, held_ids) == {}

            proxy.resume()
            start = time.monotonic()
            ids = [first.headers["X-Request-Id"], *held_ids]
            assert wait_for(lambda: len(stored(direct, ids)) == len(ids), 60)
            print(f"replayed {time.monotonic() - start:.2f} s after the partition healed")
            assert stored(direct, ids) == {request_id: 1 for request_id in ids}
            assert wait_for(lambda: spooled(spool_dir) == [], 10)
            assert requests.get(gw.base_url + "/readyz", timeout=10).status_code == 200
            log = gw.log()
            assert "could not look up an API key" in log and "request log: database unavailable" in log
        finally:
            proxy.resume()
            stop(gw.proc)
            proxy.close()
            direct.dispose()
