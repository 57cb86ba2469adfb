"""gunicorn.conf.py's own settings: a bad one stops the master with one line naming the variable and the value,
as a bad setting of the app does (not gunicorn's "Failed to read config file" and a traceback)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gunicorn(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full.update({"PYTHONPATH": ROOT, "DATABASE_URL": "sqlite:///:memory:", "PORT": "0", **env})
    return subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                          env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name,value", [
    ("WEB_CONCURRENCY", "0"), ("GATEWAY_WORKER_CONNECTIONS", "many"),
    ("GATEWAY_KEEPALIVE", "x"), ("GATEWAY_GRACEFUL_TIMEOUT", "1.5"), ("GATEWAY_WORKER_TIMEOUT", "x"),
    ("GATEWAY_MAX_REQUESTS", "-5"), ("PORT", "abc"), ("PORT", "70000"), ("GATEWAY_LOG_LEVEL", "LOUD"),
])
def test_a_bad_gunicorn_setting_stops_the_master_with_one_line_naming_it(name, value):
    out = gunicorn(**{name: value})
    assert out.returncode != 0
    lines = (out.stderr + out.stdout).strip().splitlines()
    assert len(lines) == 1, lines
    assert name in lines[0] and value in lines[0]


def test_gateway_serve_names_a_web_concurrency_gunicorn_itself_cannot_read(tmp_path):
    # gunicorn reads WEB_CONCURRENCY with int() as it is imported, before gunicorn.conf.py runs: a plain
    # `gunicorn` can only fail with its traceback there, `gateway serve` checks first.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"PYTHONPATH": ROOT, "WEB_CONCURRENCY": "two"})
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    lines = (out.stderr + out.stdout).strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, lines
    assert "WEB_CONCURRENCY" in lines[0] and "two" in lines[0]


def test_empty_settings_take_their_defaults_and_the_app_stays_out_of_the_master():
    # Run as gunicorn runs the file (under __config__, past the allocator re-exec). An empty variable means
    # its default, as for every other setting; and what the file imports is in every worker before gevent
    # patches anything, so it must not be the app (ssl, urllib3 and the rest come with `import gateway`).
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('__config__', 'gunicorn.conf.py')\n"
            "conf = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(conf)\n"
            "print(conf.bind, conf.workers, conf.worker_connections, conf.timeout, conf.graceful_timeout,"
            " conf.keepalive, conf.max_requests, conf.loglevel)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gateway', 'flask', 'urllib3', 'requests',"
            " 'sqlalchemy', 'redis')))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"PYTHONPATH": ROOT, "PYTHONMALLOC": "malloc", "WEB_CONCURRENCY": "3", "PORT": "",
                "GATEWAY_WORKER_CONNECTIONS": "", "GATEWAY_WORKER_TIMEOUT": "", "GATEWAY_GRACEFUL_TIMEOUT": "",
                "GATEWAY_KEEPALIVE": "", "GATEWAY_MAX_REQUESTS": "", "GATEWAY_LOG_LEVEL": "",
                "PROMETHEUS_MULTIPROC_DIR": "/nonexistent-not-made"})
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["0.0.0.0:8080 3 4000 60 120 5 50000 info", "[]"]
