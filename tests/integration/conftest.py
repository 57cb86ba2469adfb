"""Real servers on free ports: the provider simulator, and the gateway under gunicorn + gevent workers."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from gateway.extensions import make_engine
from gateway.store.keys import create_key
from gateway.store.migrate import upgrade
from tests.conftest import free_port, simulator_running

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def simulator():
    with simulator_running("--tokens", "12") as base:
        yield base


@pytest.fixture(scope="module")
def paced_simulator():
    """A simulator whose streams take a while, so chunk-by-chunk delivery is visible."""
    with simulator_running("--tokens", "20", "--tokens-per-second", "40") as base:
        yield base


@pytest.fixture(autouse=True)
def _clean_simulator_rules(request):
    for name in ("simulator", "paced_simulator"):
        if name in request.fixturenames:
            requests.post(request.getfixturevalue(name) + "/_sim/reset", timeout=5)


class Server:
    def __init__(self, proc, base_url, key, database_url, log_path):
        self.proc, self.base_url, self.key, self.database_url, self.log_path = proc, base_url, key, database_url, log_path

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.key}"}

    def log(self):
        with open(self.log_path) as f:
            return f.read()


def simulator_env(base):
    return {"OPENAI_BASE_URL": base + "/v1", "ANTHROPIC_BASE_URL": base, "GEMINI_BASE_URL": base,
            "OPENAI_API_KEY": "sk-sim-openai-SECRET", "ANTHROPIC_API_KEY": "sk-ant-sim-SECRET",
            "GEMINI_API_KEY": "AIza-sim-SECRET"}


def launch(upstream_base, database_url, log_dir, workers=1, cache=False, rate_limit=None, **env):
    """gunicorn + gevent as the Procfile runs it, against `upstream_base`; a key for it; -> Server.
    An env value of None removes that variable."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_"))}
    full.update(simulator_env(upstream_base))
    full.update({"DATABASE_URL": database_url, "PORT": str(port), "WEB_CONCURRENCY": str(workers),
                 "GATEWAY_ACCESS_LOG": "", "GATEWAY_KEEPALIVE": "1", "PYTHONPATH": ROOT})
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = str(v)
    log_path = log_dir / f"gunicorn-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited {proc.returncode}: {open(log_path).read()[-2000:]}")
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    else:
        stop(proc)
        raise RuntimeError("gunicorn did not become healthy: " + open(log_path).read()[-2000:])
    # Keys skip the cache unless a test asks for it: fault tests repeat identical requests.
    key, _ = create_key(make_engine(database_url), "integration", rate_limit_per_minute=rate_limit,
                        cache_enabled=cache)
    return Server(proc, base, key, database_url, log_path)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def start_gateway(sqlite_url, tmp_path):
    """start_gateway(upstream_base, workers=1, database_url=None, cache=False, rate_limit=None, **env) -> Server."""
    servers = []

    def start(upstream_base, database_url=None, **kwargs):
        servers.append(launch(upstream_base, database_url or sqlite_url, tmp_path, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        stop(server.proc)


@pytest.fixture(scope="module")
def start_module_gateway(tmp_path_factory):
    """start_gateway's module-scoped twin, for suites that share one gateway across their tests."""
    servers = []
    tmp = tmp_path_factory.mktemp("gateway")
    sqlite = f"sqlite:///{tmp / 'gateway.db'}"
    upgrade(sqlite)

    def start(upstream_base, **kwargs):
        servers.append(launch(upstream_base, sqlite, tmp, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        stop(server.proc)
