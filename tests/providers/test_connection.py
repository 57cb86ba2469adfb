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
