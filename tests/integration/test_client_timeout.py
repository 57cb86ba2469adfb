"""A client that stops reading its answer, or stops sending its body, is let go after GATEWAY_CLIENT_TIMEOUT,
through a real gunicorn: its stream ends, the upstream call behind it ends, and its row is written."""
import json
import select
import socket
import time
import types

import pytest

from tests.conftest import simulator_running
from tests.integration.faults import log_row


@pytest.fixture(scope="module")
def endless_simulator():
    """A simulator whose answers are ~300,000 words, sent as fast as they can be taken."""
    with simulator_running("--tokens", "300000") as base:
        yield base


def _connect(gw, receive_buffer=None):
    host, port = gw.base_url.split("//", 1)[1].split(":")
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    return sock


def _request(gw, body, content_length=None):
    raw = json.dumps(body).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {gw.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length or len(raw)}\r\n\r\n").encode()
    return head + raw


def _head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        assert piece, f"closed before the head: {data!r}"
        data += piece
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    return int(head.split(" ", 2)[1]), headers, data.split(b"\r\n\r\n", 1)[1]


def test_a_client_that_stops_reading_its_stream_is_let_go(start_gateway, endless_simulator):
    gw = start_gateway(endless_simulator, GATEWAY_CLIENT_TIMEOUT="1", GATEWAY_READ_TIMEOUT="30")
    sock = _connect(gw, receive_buffer=4096)
    sock.settimeout(30)
    sock.sendall(_request(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Go on"}],
                               "stream": True}))
    status, headers, _ = _head(sock)
    assert status == 200
    time.sleep(4)  # reads nothing: the gateway's buffer to it fills, and its sends wait
    started, received, closed = time.monotonic(), b"", False
    while not closed and time.monotonic() - started < 10:  # what was on its way arrives, then the end
        piece = sock.recv(1 << 16)
        closed = not piece
        received += piece
    assert closed, f"still streaming after 10 s ({len(received):,} bytes)"
    assert b"[DONE]" not in received  # the answer was far from its end: it was cut, not finished
    row = log_row(types.SimpleNamespace(gw=gw, headers=headers), wait=10)
    assert row.status_code == 499 and row.stream
    assert row.latency_ms < 15000


def test_a_client_that_stops_sending_its_body_gets_a_408(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_CLIENT_TIMEOUT="1")
    sock = _connect(gw)
    sock.settimeout(10)
    whole = _request(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]})
    started = time.monotonic()
    sock.sendall(whole[:-10])  # the body, less its last 10 bytes
    status, headers, rest = _head(sock)
    assert status == 408 and time.monotonic() - started < 10
    assert b'"code":"request_timeout"' in rest.replace(b" ", b"")


def test_a_slow_but_steady_reader_gets_its_whole_answer(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_CLIENT_TIMEOUT="1")
    sock = _connect(gw, receive_buffer=4096)
    sock.settimeout(30)
    sock.sendall(_request(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}],
                               "stream": True}))
    received = b""
    while b"[DONE]" not in received:
        piece = sock.recv(512)  # a little at a time, with pauses shorter than the timeout
        assert piece, received
        received += piece
        time.sleep(0.05)
    assert received.startswith(b"HTTP/1.1 200")


def _get(path="/healthz"):
    return f"GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()


def _read_response(sock):
    status, headers, rest = _head(sock)
    length = int(headers.get("Content-Length", "0"))
    while len(rest) < length:
        piece = sock.recv(4096)
        assert piece, "closed before the end of the body"
        rest += piece
    return status


def test_an_idle_keepalive_connection_lives_for_GATEWAY_KEEPALIVE_not_the_client_timeout(start_gateway, simulator):
    # Behind a load balancer that keeps idle connections 60 s, an operator sets GATEWAY_KEEPALIVE=75 so that the
    # gateway never closes first: the client timeout (60 s by default) must not cut them short.
    gw = start_gateway(simulator, GATEWAY_KEEPALIVE="4", GATEWAY_CLIENT_TIMEOUT="1")
    sock = _connect(gw)
    sock.settimeout(10)
    sock.sendall(_get())
    assert _read_response(sock) == 200
    time.sleep(2)  # idle, longer than the client timeout, within the keep-alive
    sock.sendall(_get())
    assert _read_response(sock) == 200
    time.sleep(0.5)
    assert "Traceback" not in gw.log()


def test_a_rate_limited_request_whose_body_stalls_is_a_429_with_its_row(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_CLIENT_TIMEOUT="1", rate_limit=1)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
    first = _connect(gw)
    first.settimeout(10)
    first.sendall(_request(gw, body))
    assert _head(first)[0] == 200
    sock = _connect(gw)
    sock.settimeout(10)
    sock.sendall(_request(gw, body)[:-10])  # refused (429) before its body is read; the body never ends
    status, headers, _ = _head(sock)
    assert status == 429
    row = log_row(types.SimpleNamespace(gw=gw, headers=headers), wait=10)
    assert row.status_code == 429
    assert "Traceback" not in gw.log()


def test_a_408_leaves_no_traceback(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_CLIENT_TIMEOUT="1", GATEWAY_KEEPALIVE="5")
    sock = _connect(gw)
    sock.settimeout(10)
    sock.sendall(_request(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]})[:-10])
    status, _, _ = _head(sock)
    time.sleep(2.5)
    assert status == 408 and "Traceback" not in gw.log()


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline(start_gateway, simulator):
    # Each byte comes well within the client timeout, so only a bound on the whole read ends it (it was held for
    # as long as the client kept trickling).
    gw = start_gateway(simulator, GATEWAY_CLIENT_TIMEOUT="5", GATEWAY_DEADLINE="2")
    sock = _connect(gw)
    sock.settimeout(15)
    whole = _request(gw, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]})
    head, body = whole.split(b"\r\n\r\n", 1)
    sock.sendall(head + b"\r\n\r\n")
    started, sent = time.monotonic(), 0
    while sent < len(body) - 1 and not select.select([sock], [], [], 0.3)[0]:
        sock.send(body[sent:sent + 1])
        sent += 1
    assert sent < len(body) - 1, "the whole body went out a byte at a time and no answer came"
    status, _, rest = _head(sock)
    assert status == 408 and time.monotonic() - started < 6
    assert b'"code":"request_timeout"' in rest.replace(b" ", b"")


def test_a_body_shorter_than_its_content_length_is_refused_without_an_upstream_call(start_gateway, simulator):
    gw = start_gateway(simulator, GATEWAY_CLIENT_TIMEOUT="5")
    sock = _connect(gw)
    sock.settimeout(10)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
    sock.sendall(_request(gw, body, content_length=len(json.dumps(body)) + 100))
    sock.shutdown(socket.SHUT_WR)  # the client is done sending: 100 bytes short
    status, _, rest = _head(sock)
    assert status == 400 and b"Content-Length" in rest
    assert "Traceback" not in gw.log()


@pytest.mark.parametrize("chunked", [
    b"zz\r\n{}\r\n0\r\n\r\n",                       # a chunk size that is not hex
    b"2\r\n{}XX0\r\n\r\n",                          # a chunk without its terminator
    b"2\r\n{}\r\n0\r\nBad Trailer\r\n\r\n",         # a trailer that is not a header
])
def test_a_body_whose_chunked_encoding_is_broken_is_a_400(start_gateway, simulator, chunked):
    gw = start_gateway(simulator)
    sock = _connect(gw)
    sock.settimeout(10)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {gw.key}\r\n"
                 f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked)
    status, _, rest = _head(sock)
    assert status == 400 and b'"type":"invalid_request_error"' in rest.replace(b" ", b"")
    time.sleep(0.5)
    assert "Traceback" not in gw.log() and "unhandled error" not in gw.log()
