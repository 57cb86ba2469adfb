"""Upstream connections send a request's head with its body: the same bytes, one send fewer."""
import socket
import threading

import pytest
from urllib3 import HTTPConnectionPool

from gateway.providers.connection import Connection
from gateway.providers.pools import HTTPPool, HTTPSPool
from gateway.providers.connection import TLSConnection


class Server:
    """Answers each request with a small 200 and keeps the bytes it received."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self.received += data
                if self._whole():
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def _whole(self):
        head, sep, rest = self.received.partition(b"\r\n\r\n")
        if not sep:
            return False
        if b"transfer-encoding: chunked" in head.lower():
            return rest.endswith(b"0\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        return len(rest) >= length


def _send(conn_cls, method, body=None, chunked=False):
    server = Server()
    pool = HTTPConnectionPool("127.0.0.1", server.port, maxsize=1)
    pool.ConnectionCls = conn_cls
    sends = []
    original = socket.socket.sendall

    def counting(sock, data, *args):
        if sock.getsockname()[1] != server.port:  # the client's sends, not the server's answer
            sends.append(bytes(data))
        return original(sock, data, *args)
    socket.socket.sendall = counting
    try:
        resp = pool.urlopen(method, "/v1/chat/completions", body=body, chunked=chunked,
                            headers={"Host": "upstream", "User-Agent": "t", "Content-Type": "application/json"})
    finally:
        socket.socket.sendall = original
    assert resp.status == 200 and resp.data == b"ok"
    pool.close()
    return b"".join(sends), len(sends)


CASES = {
    "json body": ("POST", b'{"model": "gpt-4o-mini", "messages": []}', False),
    "no body": ("GET", None, False),
    "chunked body": ("POST", iter([b'{"a":', b' 1}']), True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_request_bytes_are_urllib3s(case):
    method, body, chunked = case
    ours, _ = _send(Connection, method, body, chunked)
    if isinstance(body, type(iter([]))):
        body = iter([b'{"a":', b' 1}'])
    stock, _ = _send(HTTPConnectionPool.ConnectionCls, method, body, chunked)
    assert ours == stock and ours.startswith(method.encode() + b" /v1/chat/completions HTTP/1.1\r\n")


def test_a_request_with_a_body_is_one_send():
    body = b'{"model": "gpt-4o-mini", "messages": []}'
    data, sends = _send(Connection, "POST", body)
    _, stock_sends = _send(HTTPConnectionPool.ConnectionCls, "POST", body)
    assert (sends, stock_sends) == (1, 2) and data.endswith(b"\r\n\r\n" + body)


def test_a_request_without_a_body_still_sends_its_head():
    data, sends = _send(Connection, "GET")
    assert sends == 1 and data.endswith(b"\r\n\r\n")


def test_the_gateways_pools_use_them():
    assert HTTPPool.ConnectionCls is Connection and HTTPSPool.ConnectionCls is TLSConnection


# ---------------------------------------------------------------- response headers without the e-mail parser

OPENAI_HEAD = (
    b"Date: Thu, 27 Nov 2026 06:00:00 GMT\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\naccess-control-expose-headers: X-Request-ID\r\nopenai-organization: user-abc\r\n"
    b"openai-processing-ms: 312\r\nopenai-version: 2020-10-01\r\n"
    b"x-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-tokens: 199980\r\nx-ratelimit-reset-tokens: 6ms\r\n"
    b"x-request-id: req_0123456789abcdef\r\n"
    b"Set-Cookie: __cf_bm=abc; path=/; expires=Thu, 27-Nov-26 06:30:00 GMT; HttpOnly; Secure; SameSite=None\r\n"
    b"Set-Cookie: _cfuvid=def; path=/; HttpOnly\r\nServer: cloudflare\r\nalt-svc: h3=\":443\"; ma=86400\r\n\r\n")

HEADS = [
    OPENAI_HEAD,
    b"\r\n",                                                   # no headers at all
    b"",                                                       # the stream ended before the blank line
    b"A: b\n\n",                                               # bare LF line ends
    b"A:b\r\nB:   spaced   \r\nC:\r\nD: \t tab\r\n\r\n",      # no space after the colon, trailing blanks, empty
    b"X-Folded: one\r\n two\r\nNext: v\r\n\r\n",               # obsolete line folding
    b"\tleading: tab\r\nA: b\r\n\r\n",                         # a continuation with nothing before it
    b": no name\r\nA: b\r\n\r\n",                              # an empty name
    b"no colon here\r\nA: b\r\n\r\n",                          # not a header: the e-mail parser starts the body
    b"From nobody Thu Nov 27 2026\r\nA: b\r\n\r\n",            # an mbox "From " line
    b"Bad Name: x\r\nA: b\r\n\r\n",                            # a space in the name
    b"A: caf\xe9\r\nB: c\r\n\r\n",                             # a byte outside ASCII (latin-1)
    b"A: one\rtwo\r\nB: c\r\n\r\n",                            # a stray CR, which the e-mail parser splits at
]


def _stdlib(head):
    import http.client
    import io
    return http.client.parse_headers(io.BytesIO(head))


@pytest.mark.parametrize("head", HEADS)
def test_response_headers_read_as_http_client_reads_them(head):
    import io
    from gateway.providers.connection import _headers
    fast, slow = _headers(io.BytesIO(head)), _stdlib(head)
    assert type(fast) is type(slow)
    assert fast.items() == slow.items()
    assert [type(d) for d in fast.defects] == [type(d) for d in slow.defects]
    assert fast.get_payload() == slow.get_payload() and str(fast) == str(slow)
    assert fast.get_all("set-cookie") == slow.get_all("set-cookie")


def test_plain_headers_skip_the_email_parser(monkeypatch):
    import email.parser
    import io
    from gateway.providers.connection import _headers

    def refuse(*args, **kwargs):
        raise AssertionError("the e-mail parser was used")
    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    assert _headers(io.BytesIO(OPENAI_HEAD))["x-request-id"] == "req_0123456789abcdef"


@pytest.mark.parametrize("conn_cls", [Connection])
def test_an_upstream_answer_through_the_pool_uses_the_fast_headers(conn_cls, monkeypatch):
    import email.parser

    def refuse(*args, **kwargs):
        raise AssertionError("the e-mail parser was used")
    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    server = Server()
    pool = HTTPConnectionPool("127.0.0.1", server.port, maxsize=1)
    pool.ConnectionCls = conn_cls
    resp = pool.urlopen("POST", "/v1/chat/completions", body=b"{}", headers={"Host": "upstream"})
    assert (resp.status, resp.data, resp.headers["Content-Length"]) == (200, b"ok", "2")


# ---------------------------------------------------------------- is a pooled connection still open?

class OneAnswerServer:
    """Answers one request per connection; `close_after` closes the connection once it has answered (without
    saying so in a header, as an upstream's idle timeout does)."""

    def __init__(self, close_after):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port, self.accepted, self.close_after = self.sock.getsockname()[1], 0, close_after
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if self.close_after:
                    return


@pytest.mark.parametrize("close_after, connections", [(False, 1), (True, 2)])
def test_a_pooled_connection_is_reused_while_open_and_replaced_once_closed(close_after, connections):
    import time
    server = OneAnswerServer(close_after)
    pool = HTTPPool("127.0.0.1", server.port, maxsize=1)
    for _ in range(2):
        resp = pool.urlopen("GET", "/", retries=False, headers={"Host": "upstream"})
        assert (resp.status, resp.data) == (200, b"ok")
        time.sleep(0.05)  # the server's FIN arrives
    assert server.accepted == connections


def test_is_connected_reads_the_socket_without_waiting():
    a, b = socket.socketpair()
    conn = Connection("127.0.0.1", 1)
    conn.sock = a
    assert conn.is_connected
    b.sendall(b"x")            # readable: urllib3 counts a connection with unread bytes as dropped
    assert not conn.is_connected
    a.recv(1)
    b.close()                  # EOF: the peer has gone
    assert not conn.is_connected
    conn.sock = None
    assert not conn.is_connected
    a.close()


def test_this_python_gets_the_fast_header_path():
    # If a future http.client stops reading headers through its parse_headers global, the stock response is
    # used (correct, slower); this says so here rather than silently.
    from gateway.providers import connection
    assert connection.Response is not http_client().HTTPResponse and connection._FAST_BEGIN is not None


def http_client():
    import http.client
    return http.client
