"""The Procfile, run the way a Heroku-style platform runs it: `release:` then `web:` through a shell,
with $PORT and a `postgres://` DATABASE_URL."""
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import free_port, fresh_database
from tests.integration.conftest import ROOT


def procfile():
    lines = {}
    with open(os.path.join(ROOT, "Procfile")) as f:
        for line in f:
            if ":" in line and not line.startswith("#"):
                name, command = line.split(":", 1)
                lines[name.strip()] = command.strip()
    return lines


@pytest.fixture
def heroku_database():
    """A fresh, empty database of the test's own, as a platform add-on hands it over: postgres://..."""
    with fresh_database("gateway_procfile") as url:
        yield url


def test_release_then_web(heroku_database, simulator, tmp_path):
    lines = procfile()
    assert set(lines) >= {"web", "release"}
    bin_dir = os.path.dirname(sys.executable)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_"))},
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DATABASE_URL": heroku_database,
           "PORT": str(port), "WEB_CONCURRENCY": "2", "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": simulator + "/v1",
           "GATEWAY_INSTANCE_DIR": str(tmp_path), "GATEWAY_KEEPALIVE": "1"}
    release = subprocess.run(lines["release"], shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert release.returncode == 0, release.stderr
    web = subprocess.Popen(lines["web"], shell=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        ready = requests.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
        key = subprocess.run("gateway keys create --name platform", shell=True, cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        resp = requests.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert resp.status_code == 200
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)


def test_a_rediss_url_is_accepted():
    from gateway import config
    assert config.load({"REDIS_URL": "rediss://:secret@redis.example.com:6380/0"}).redis_url.startswith("rediss://")


def test_readyz_names_what_is_down(start_gateway, simulator):
    gw = start_gateway(simulator, REDIS_URL="redis://127.0.0.1:1/0")
    resp = requests.get(gw.base_url + "/readyz", timeout=5)
    assert resp.status_code == 503 and resp.json()["down"] == ["redis"]
