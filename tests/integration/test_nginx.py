"""Debian's real nginx, with deploy/nginx.conf, in front of a real gunicorn: SSE must pass unbuffered."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

from tests.conftest import CI, free_port
from tests.integration.conftest import ROOT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture
def nginx(tmp_path):
    if not os.path.exists(NGINX):
        if CI:
            pytest.fail("nginx is required in CI (apt-get install nginx-light)")
        pytest.skip("nginx is not installed")
    procs = []

    def start(gateway_port):
        port = free_port()
        site = open(os.path.join(ROOT, "deploy", "nginx.conf")).read()
        site = site.replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}").replace("listen 80;", f"listen 127.0.0.1:{port};")
        (tmp_path / "gateway.conf").write_text(site)
        (tmp_path / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/gateway.conf;
}}
""")
        proc = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                                stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return f"http://127.0.0.1:{port}"
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start: " + proc.stderr.read().decode()[-1000:])

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=10)


def test_a_stream_arrives_through_nginx_chunk_by_chunk(start_gateway, paced_simulator, nginx):
    gw = start_gateway(paced_simulator)
    base = nginx(int(gw.base_url.rsplit(":", 1)[1]))
    arrivals, events = [], []
    started = time.monotonic()
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Tell me a story"}], "stream": True}
    with requests.post(base + "/v1/chat/completions", json=body, headers=gw.headers, stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic() - started)
                events.append(line[6:].decode())
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if json.loads(e)["choices"])
    assert len(text.split()) >= 15
    # 20 tokens at 40 per second take ~0.5 s: buffered, every event would arrive at the end together.
    assert arrivals[-1] - arrivals[0] > 0.3
    assert arrivals[0] < arrivals[-1] / 2


def test_a_body_over_the_limit_is_refused_by_nginx_too(start_gateway, simulator, nginx):
    gw = start_gateway(simulator)
    base = nginx(int(gw.base_url.rsplit(":", 1)[1]))
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]}
    resp = requests.post(base + "/v1/chat/completions", json=big, headers=gw.headers, timeout=30)
    assert resp.status_code == 413
