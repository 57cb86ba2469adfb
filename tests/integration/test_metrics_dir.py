"""The Prometheus multiprocess directory gunicorn.conf.py makes is gone when the master exits, however it exits;
one the operator set is left alone."""
import os
import signal
import subprocess
import sys
import time

from tests.conftest import free_port
from tests.integration.conftest import ROOT, launch, stop


def made(tmp):
    return sorted(p for p in os.listdir(tmp) if p.startswith("gateway-metrics-"))


def test_the_directory_made_at_start_is_removed_when_the_master_stops(simulator, sqlite_url, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gw = launch(simulator, sqlite_url, tmp_path, TMPDIR=tmp, PROMETHEUS_MULTIPROC_DIR=None)
    try:
        assert len(made(tmp)) == 1
        gw.proc.send_signal(signal.SIGHUP)   # the master reads gunicorn.conf.py again: same directory
        time.sleep(2)
        assert len(made(tmp)) == 1
    finally:
        stop(gw.proc)
    assert gw.proc.returncode == 0
    assert made(tmp) == []


def test_the_directory_is_removed_when_start_up_fails_and_an_operators_is_kept(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    own = tmp_path / "own-metrics"
    own.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path}/empty.db", "PORT": str(free_port()), "PYTHONPATH": ROOT,
                "TMPDIR": str(tmp)})
    for extra in ({}, {"PROMETHEUS_MULTIPROC_DIR": str(own)}):
        out = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                             env={**env, **extra}, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "gateway db upgrade" in out.stderr   # the schema check stopped it
    assert made(tmp) == []
    assert own.is_dir()
