"""What a worker costs in memory: the allocator it runs on, and what it does not load."""
import os
import subprocess
import sys

import pytest
import requests

from tests.integration.conftest import ROOT


def _workers(master_pid):
    children = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == master_pid:
            children.append(int(pid))
    return children


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
