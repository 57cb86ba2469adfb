"""`gateway serve` reads relative paths against the current directory, as every other subcommand does."""
import os
import signal
import subprocess
import sys
import time

import requests

from tests.conftest import free_port
from tests.integration.conftest import ROOT


def test_serve_uses_the_database_and_files_of_the_current_directory(tmp_path):
    (tmp_path / "models.toml").write_text("")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "PROMETHEUS_"))
           and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"PYTHONPATH": ROOT, "PORT": str(port), "GATEWAY_CONFIG": "models.toml",
                "GATEWAY_INSTANCE_DIR": "data", "GATEWAY_ACCESS_LOG": "", "GATEWAY_KEEPALIVE": "1"})
    gateway = [sys.executable, "-m", "gateway.cli"]
    subprocess.run([*gateway, "db", "upgrade"], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60)
    key = subprocess.run([*gateway, "keys", "create", "--name", "here"], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
    assert (tmp_path / "data" / "gateway.db").exists()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        serve = subprocess.Popen([*gateway, "serve"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            assert serve.poll() is None, log.read_text()[-2000:]
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        # The key lives in ./data/gateway.db: served from there, not from a database of the source directory.
        resp = requests.get(base + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert resp.status_code == 200, resp.text
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
    assert not os.path.exists(os.path.join(ROOT, "data"))
