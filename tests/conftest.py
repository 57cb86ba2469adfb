"""Shared fixtures: a fresh app per test on its own SQLite file, and (when asked for) a PostgreSQL
database and a Redis namespace that the suite creates and removes itself.

PostgreSQL and Redis tests skip on a developer machine without them, and fail when CI is set.
"""
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time

import pytest

from gateway import config, create_app
from gateway.store.keys import create_key
from gateway.store.migrate import upgrade

CI = bool(os.environ.get("CI"))
PG_ADMIN_URL = os.environ.get("GATEWAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def unavailable(what, why):
    if CI:
        pytest.fail(f"{what} is required in CI but unavailable: {why}")
    pytest.skip(f"{what} unavailable: {why}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fresh_database(prefix):
    """An empty PostgreSQL database of the caller's own; yields its postgres:// URL, drops it after."""
    import psycopg2
    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as e:
        unavailable("PostgreSQL", e)
    admin.autocommit = True
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield "postgres://" + PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def simulator_running(*args):
    """A provider simulator (`gateway simulate`) with these options, in a process of its own: its base URL."""
    from gateway.simulator import spawn_process
    proc, base = spawn_process(list(args))
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _no_metrics_dir_left_in_the_environment(monkeypatch):
    """Tests that run gunicorn.conf.py in this process make it name a metrics directory of its own in this
    process's environment, where every gunicorn a later test starts found it (and counted another gateway's
    requests as its own). Each test's environment changes to those two names are undone after it."""
    for name in ("PROMETHEUS_MULTIPROC_DIR", "GATEWAY_METRICS_DIR_OWNER"):
        monkeypatch.setenv(name, "")  # recorded, so what the test leaves is undone
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of the suite's own, migrated, dropped at the end."""
    with fresh_database("gateway_test") as raw:
        url = config.database_url(raw)
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def redis_url():
    import redis
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        unavailable("Redis", e)
    return REDIS_TEST_URL


@pytest.fixture
def redis_prefix(redis_url):
    """A key namespace of this test's own; its keys (and only they) are deleted afterwards."""
    import redis
    prefix = f"gwtest:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


class ThrowawayRedis:
    """A redis-server of a test's own on a free port, to stop, pause and restart."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        import redis
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                probe.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the throwaway redis-server did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it paused
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis(redis_prefix):
    if shutil.which("redis-server") is None:
        unavailable("redis-server", "not on PATH")
    server = ThrowawayRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    return url


BASE_ENV = {
    "OPENAI_API_KEY": "sk-test-openai-SECRET",
    "ANTHROPIC_API_KEY": "sk-ant-test-SECRET",
    "GEMINI_API_KEY": "AIza-test-SECRET",
}


@pytest.fixture
def make_app(sqlite_url):
    """make_app(**env) -> (app, key): a fresh app on a migrated database, and a live key for it."""
    def factory(database_url=None, **env):
        full = {**BASE_ENV, "DATABASE_URL": database_url or sqlite_url, **env}
        app = create_app(config.load({k: v for k, v in full.items() if v is not None}))
        app.testing = True
        key, _ = create_key(app.extensions["gateway"].engine, "test")
        return app, key
    return factory


@pytest.fixture
def app_key(make_app):
    return make_app()


@pytest.fixture
def client(app_key):
    app, key = app_key
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return c
