"""Byte-level upstream faults the simulator does not make: an answer whose headers come at once and whose body
trickles in (a congested link, a proxy metering bytes), or never comes; a stream kept alive by SSE comments
that never sends an event. A small OpenAI-speaking server of the test's own, over real sockets, through
gunicorn + gevent.

The socket timeouts bound each wait for a byte; these check that the settings bound what the README says they
do: GATEWAY_ANSWER_TIMEOUT an answer that stops (GATEWAY_READ_TIMEOUT a stream), GATEWAY_FIRST_TOKEN_TIMEOUT the wait
for a stream's first event, GATEWAY_DEADLINE the whole request.
"""
import json
import re
import socket
import threading

import pytest

from tests.integration.faults import SLACK, assert_logged, chat, log_row

TIMEOUT = 1.0    # GATEWAY_READ_TIMEOUT = GATEWAY_ANSWER_TIMEOUT = GATEWAY_FIRST_TOKEN_TIMEOUT
DEADLINE = 3.0
DRIP = 0.3       # seconds between two trickled bytes: well inside the read timeout
ENV = {"GATEWAY_READ_TIMEOUT": str(TIMEOUT), "GATEWAY_ANSWER_TIMEOUT": str(TIMEOUT),
       "GATEWAY_FIRST_TOKEN_TIMEOUT": str(TIMEOUT), "GATEWAY_CONNECT_TIMEOUT": "1", "GATEWAY_DEADLINE": str(DEADLINE),
       "GATEWAY_RETRY_BACKOFF": "0.05", "GATEWAY_BREAKER_FAILURES": "1000000", "GATEWAY_LOG_FLUSH_SECONDS": "0.05",
       "ANTHROPIC_API_KEY": None, "GEMINI_API_KEY": None}
FAULTY, HEALTHY = "gpt-4o-mini", "gpt-4o"   # the upstream misbehaves for the first only
ANSWER = "hello there"


def _completion(model):
    return json.dumps({"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()


def _event(model, text, finish=None):
    chunk = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": model,
             "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class Upstream:
    """OpenAI's chat completions on a free port: `mode` says how the FAULTY model answers; HEALTHY answers."""

    def __init__(self):
        self.mode = "ok"
        self.calls = {}
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.base = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._stop.set()
        self._listener.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                while self._answer(conn):
                    pass
        except OSError:
            pass

    def _request(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            got = conn.recv(65536)
            if not got:
                return None
            data += got
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
        return json.loads(body)

    def _trickle(self, conn, data):
        for i in range(len(data)):
            if self._stop.wait(DRIP):
                return
            conn.sendall(data[i:i + 1])

    def _answer(self, conn):
        """Answer one request; whether the connection can take another."""
        body = self._request(conn)
        if body is None:
            return False
        model, stream = body["model"], body.get("stream")
        self.calls[model] = self.calls.get(model, 0) + 1
        mode = self.mode if model == FAULTY else "ok"
        if stream:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            events = _event(model, ANSWER) + _event(model, "", "stop") + b"data: [DONE]\n\n"
            if mode == "ok":
                conn.sendall(head + events)
            elif mode == "drip":           # the first event, a byte at a time
                conn.sendall(head)
                self._trickle(conn, events)
            elif mode == "comments":       # keep-alive comments, never an event
                conn.sendall(head)
                while not self._stop.wait(DRIP):
                    conn.sendall(b": keep-alive\n\n")
            return False
        answer = _completion(model)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(answer)
        if mode == "ok":
            conn.sendall(head + answer)
            return True
        conn.sendall(head)
        if mode == "drip":
            self._trickle(conn, answer)
        elif mode == "silence":            # the headers, then nothing, the connection left open
            self._stop.wait(60)
        return False


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream):
    return start_module_gateway(upstream.base, **ENV)


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.mode, upstream.calls = "ok", {}


def _attempts(res):
    row = log_row(res)
    return [(a["model"], a["reason"]) for a in json.loads(row.attempts or "[]") if not a.get("skipped")]


def test_the_fake_upstream_answers_through_the_gateway(gw, upstream):
    res = chat(gw, "hi")
    assert res.status == 200 and res.text == ANSWER
    res = chat(gw, "hi", stream=True)
    assert res.done and res.text == ANSWER


def test_headers_then_silence_is_a_read_timeout_failed_over_at_once_and_never_retried(gw, upstream):
    upstream.mode = "silence"
    res = chat(gw, "hi", headers={"X-Gateway-Fallbacks": HEALTHY})
    assert res.status == 200 and res.text == ANSWER and res.headers["X-Model"] == HEALTHY
    assert upstream.calls == {FAULTY: 1, HEALTHY: 1}
    assert _attempts(res) == [(FAULTY, "timeout")]
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK


def test_headers_then_silence_alone_is_a_504_timeout(gw, upstream):
    upstream.mode = "silence"
    res = chat(gw, "hi", headers={"X-Gateway-Failover": "off"})
    assert res.status == 504 and res.body["error"]["code"] == "upstream_timeout"
    assert "did not answer in time" in res.body["error"]["message"]
    assert upstream.calls == {FAULTY: 1}
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK
    assert_logged(res)


def test_a_body_trickled_a_byte_at_a_time_is_cut_at_the_deadline(gw, upstream):
    upstream.mode = "drip"   # ~90 s for the whole body, never a second without a byte
    res = chat(gw, "hi", headers={"X-Gateway-Failover": "off"})
    assert res.status == 504 and res.body["error"]["code"] == "deadline_exceeded", res.body
    assert DEADLINE <= res.elapsed < DEADLINE + SLACK
    assert _attempts(res) == [(FAULTY, "timeout")]
    assert_logged(res)


# "comments": SSE keep-alive comments and never an event; "drip": the first event a byte at a time.
@pytest.mark.parametrize("mode", ["comments", "drip"])
def test_a_stream_that_does_not_start_in_time_fails_over_at_the_first_token_timeout(gw, upstream, mode):
    upstream.mode = mode
    res = chat(gw, "hi", stream=True, headers={"X-Gateway-Fallbacks": HEALTHY})
    assert res.status == 200 and res.done and res.text == ANSWER and res.headers["X-Model"] == HEALTHY
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK
    assert _attempts(res) == [(FAULTY, "first_token")]


def test_a_stream_that_never_starts_alone_is_a_504_at_the_first_token_timeout(gw, upstream):
    upstream.mode = "comments"
    res = chat(gw, "hi", stream=True, headers={"X-Gateway-Failover": "off"})
    assert res.status == 504 and res.body["error"]["code"] == "upstream_timeout", res.body
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK
    assert_logged(res)
