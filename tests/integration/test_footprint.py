"""What a worker costs in memory: the allocator it runs on, and what it does not load."""
import os
import subprocess
import sys

import pytest
import requests

from tests.integration.conftest import ROOT
from tests.integration.procnet import connections
from tests.integration.procnet import workers as _workers


def _environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
@pytest.mark.parametrize("asked, runs_on", [
    ({}, {b"PYTHONMALLOC": b"malloc", b"PYTHONOPTIMIZE": b"2"}),
    ({"PYTHONMALLOC": "pymalloc"}, {b"PYTHONMALLOC": b"pymalloc", b"PYTHONOPTIMIZE": b"2"}),
    ({"PYTHONOPTIMIZE": "0"}, {b"PYTHONMALLOC": b"malloc", b"PYTHONOPTIMIZE": b"0"}),
])
def test_workers_run_on_the_c_allocator_without_docstrings_unless_told_otherwise(start_gateway, simulator, asked,
                                                                                 runs_on):
    gw = start_gateway(simulator, **{"PYTHONMALLOC": None, "PYTHONOPTIMIZE": None, **asked})
    assert requests.get(gw.base_url + "/healthz", timeout=5).status_code == 200
    workers = _workers(gw.proc.pid)           # gunicorn started again in place: the same master process
    assert workers
    for pid in workers:
        env = _environ(pid)
        assert {name: env.get(name) for name in runs_on} == runs_on


def test_a_worker_does_not_load_the_orm(tmp_path):
    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import sys, wsgi\n"
            "print('sqlalchemy.orm' in sys.modules, 'sqlalchemy' in sys.modules)")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/gw.db", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_after_a_burst_a_worker_keeps_four_database_connections(start_gateway, simulator, pg_url):
    """What a burst opens (64 requests with a new key, then 64 readiness checks, at once) is closed after it,
    but for 4 connections a worker: each kept one is a PostgreSQL server process, and holds libpq's buffers
    grown to the largest log batch it sent."""
    from concurrent.futures import ThreadPoolExecutor
    gw = start_gateway(simulator, database_url=pg_url, workers=2)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with ThreadPoolExecutor(64) as pool:
        chats = list(pool.map(lambda _: requests.post(gw.base_url + "/v1/chat/completions", json=body,
                                                      headers=gw.headers, timeout=30).status_code, range(64)))
        ready = list(pool.map(lambda _: requests.get(gw.base_url + "/readyz", timeout=30).status_code, range(64)))
    assert chats == [200] * 64 and ready == [200] * 64
    workers = _workers(gw.proc.pid)
    assert len(workers) == 2
    assert 1 <= sum(connections(workers, remote_port=5432).values()) <= 8
