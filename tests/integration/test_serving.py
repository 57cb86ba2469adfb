"""Production serving with the real gunicorn: graceful stop and reload, and metrics across workers."""
import concurrent.futures
import json
import re
import signal
import threading
import time

import pytest
import requests
from sqlalchemy import select

from gateway.extensions import make_engine
from gateway.store.models import gateway_logs
from tests.conftest import simulator_running

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me a story"}]}


@pytest.fixture(scope="module")
def slow_simulator():
    with simulator_running("--tokens", "20", "--tokens-per-second", "10") as base:  # a 2-second stream
        yield base


def test_sigterm_during_a_slow_stream_lets_it_finish_and_writes_its_row(start_gateway, slow_simulator):
    gw = start_gateway(slow_simulator)
    events = []
    with requests.post(gw.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=gw.headers,
                       stream=True, timeout=30) as resp:
        request_id = resp.headers["X-Request-Id"]
        lines = resp.iter_lines()
        for line in lines:
            if line.startswith(b"data: "):
                events.append(line[6:].decode())
                break
        gw.proc.send_signal(signal.SIGTERM)          # the stream has ~2 s to go
        for line in lines:
            if line.startswith(b"data: "):
                events.append(line[6:].decode())
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if json.loads(e)["choices"])
    assert len(text.split()) == 20                    # every word, not a truncated answer
    assert gw.proc.wait(timeout=30) == 0
    with make_engine(gw.database_url).connect() as conn:
        row = conn.execute(select(gateway_logs).where(gateway_logs.c.request_id == request_id)).one()
    assert row.status_code == 200 and row.stream is True and row.completion_tokens == 20


def test_sighup_reload_under_load_fails_no_request(start_gateway, simulator):
    gw = start_gateway(simulator, workers=2)
    stop = threading.Event()
    results = []

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                # A new connection each time: a client racing an idle keep-alive close is HTTP, not us.
                r = s.post(gw.base_url + "/v1/chat/completions", json=CHAT,
                           headers={**gw.headers, "Connection": "close", "Cache-Control": "no-cache"}, timeout=10)
                results.append(r.status_code)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client) for _ in range(8)]
        time.sleep(1.0)
        gw.proc.send_signal(signal.SIGHUP)
        time.sleep(3.0)
        stop.set()
        for f in futures:
            f.result()
    assert len(results) > 50
    assert set(results) == {200}, {s: results.count(s) for s in set(results)}
    assert "Booting worker" in gw.log() and re.search(r"Handling signal: hup", gw.log(), re.I)


def _sum(metrics, name, **labels):
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_every_worker(start_gateway, simulator):
    gw = start_gateway(simulator, workers=2)
    n = 40
    with requests.Session() as s:
        for i in range(n):
            r = s.post(gw.base_url + "/v1/chat/completions", headers={**gw.headers, "Connection": "close"},
                       json={**CHAT, "messages": [{"role": "user", "content": f"question {i}"}]}, timeout=10)
            assert r.status_code == 200
    # Each worker adds what it counted to the shared files every second: the scrape may lag by that much
    # (longer on a loaded machine; the loop ends as soon as every request is counted).
    deadline = time.monotonic() + 10
    while True:
        text = requests.get(gw.base_url + "/metrics", timeout=5).text
        counted = _sum(text, "gateway_requests_total", model="gpt-4o-mini", provider="openai", status="200")
        assert counted <= n
        if counted == n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == n
    assert _sum(text, "gateway_request_latency_seconds_count", model="gpt-4o-mini") == n
    assert _sum(text, "gateway_tokens_total", kind="completion") > 0


def test_the_access_log_line_names_each_request(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_ACCESS_LOG="-")
    ok = requests.post(gw.base_url + "/v1/chat/completions", headers=gw.headers, json=CHAT, timeout=10)
    bad = requests.get(gw.base_url + "/v1/nowhere?x=1", headers=gw.headers, timeout=10)
    assert ok.status_code == 200 and bad.status_code == 404
    ids = (ok.headers["X-Request-Id"], bad.headers["X-Request-Id"])
    deadline = time.monotonic() + 10   # wait for these two lines (start-up's /healthz lines have ids too)
    while time.monotonic() < deadline and not all(f"request_id={i}" in gw.log() for i in ids):
        time.sleep(0.05)
    log = gw.log()
    assert re.search(r'^127\.0\.0\.1 "POST /v1/chat/completions HTTP/1\.1" 200 %d \d+ms request_id=%s$'
                     % (len(ok.content), ok.headers["X-Request-Id"]), log, re.M), log[-2000:]
    assert re.search(r'^127\.0\.0\.1 "GET /v1/nowhere\?x=1 HTTP/1\.1" 404 \d+ \d+ms request_id=%s$'
                     % bad.headers["X-Request-Id"], log, re.M), log[-2000:]


def test_metrics_need_the_token_when_one_is_set(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_METRICS_TOKEN="scrape-me")
    assert requests.get(gw.base_url + "/metrics", timeout=5).status_code == 403
    ok = requests.get(gw.base_url + "/metrics", headers={"Authorization": "Bearer scrape-me"}, timeout=5)
    assert ok.status_code == 200 and "gateway_rate_limited_total" in ok.text


def test_a_client_that_goes_away_closes_the_upstream_stream_at_once(start_gateway, slow_simulator):
    gw = start_gateway(slow_simulator)
    resp = requests.post(gw.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=gw.headers,
                         stream=True, timeout=30)
    request_id = resp.headers["X-Request-Id"]
    next(line for line in resp.iter_lines() if line.startswith(b"data: "))
    resp.close()   # the client vanishes mid-stream, ~2 s of answer left: the connection is dropped
    started = time.monotonic()
    row = None
    while time.monotonic() - started < 1.5 and row is None:
        time.sleep(0.1)
        with make_engine(gw.database_url).connect() as conn:
            row = conn.execute(select(gateway_logs).where(gateway_logs.c.request_id == request_id)).first()
    # The row is written when the relay ends: it ended well before the upstream's answer would have.
    assert row is not None and row.status_code == 499


def test_an_old_schema_stops_gunicorn_with_the_command_to_run(tmp_path, simulator):
    import os
    import subprocess
    import sys
    from tests.conftest import free_port
    from tests.integration.conftest import ROOT
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/empty.db", "PORT": str(free_port()),
           "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "gateway db upgrade" in out.stderr + out.stdout


@pytest.mark.parametrize("send, status, code", [
    # a header past gunicorn's limit_request_field_size (8,190 bytes)
    (lambda port: (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: {'x' * 9000}\r\n"
                   "Content-Length: 2\r\n\r\n{}").encode(), 431, "request_header_fields_too_large"),
    (lambda port: b"GARBAGE\r\n\r\n", 400, "invalid_request"),
    (lambda port: f"GET /v1/models?{'a' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414, "uri_too_long"),
])
def test_what_gunicorn_refuses_before_the_app_is_an_openai_error(start_gateway, simulator, send, status, code):
    import socket
    gw = start_gateway(simulator)
    port = int(gw.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(send(port))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
