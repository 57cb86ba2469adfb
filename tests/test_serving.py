"""gateway/serving.py's response puts the same bytes on the wire as gunicorn's own, in fewer sends."""
import importlib.util
import os

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from gateway import serving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK = wsgi.Response


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):  # two responses built a moment apart must not straddle a second
    monkeypatch.setattr(util, "http_date", lambda *a: "Fri, 27 Nov 2026 00:00:00 GMT")


class Sock:
    def __init__(self):
        self.sends = []

    def sendall(self, data):
        self.sends.append(bytes(data))

    def send(self, data):  # gunicorn's 100-continue; not used by these cases
        self.sends.append(bytes(data))


def _request(method="POST", version="1.1"):
    raw = (f"{method} /v1/chat/completions HTTP/{version}\r\nHost: gw\r\nContent-Length: 0\r\n\r\n").encode()
    return next(iter(RequestParser(Config(), [raw], ("127.0.0.1", 5000))))


def _serve(response_class, method, version, status, headers, pieces):
    """What a worker does with one request: start_response, write each piece, close."""
    sock = Sock()
    resp = response_class(_request(method, version), sock, Config())
    resp.start_response(status, list(headers))
    for piece in pieces:
        resp.write(piece)
    resp.close()
    return sock.sends, resp


JSON = [("Content-Type", "application/json"), ("Content-Length", "13")]
CASES = {
    "json body": ("POST", "1.1", "200 OK", JSON, [b'{"answer": 1}']),
    "stream, chunked": ("POST", "1.1", "200 OK", [("Content-Type", "text/event-stream")],
                        [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"]),
    "stream, HTTP/1.0": ("POST", "1.0", "200 OK", [("Content-Type", "text/event-stream")],
                         [b"data: 1\n\n", b"data: [DONE]\n\n"]),
    "empty first piece, chunked": ("POST", "1.1", "200 OK", [("Content-Type", "text/event-stream")],
                                   [b"", b"data: 1\n\n"]),
    "no pieces": ("POST", "1.1", "200 OK", [("Content-Length", "0")], []),
    "HEAD": ("HEAD", "1.1", "200 OK", JSON, [b'{"answer": 1}']),
    "204": ("POST", "1.1", "204 No Content", [], [b""]),
    "body longer than Content-Length": ("POST", "1.1", "200 OK", [("Content-Length", "4")], [b"abcdefgh", b"ij"]),
    "error": ("POST", "1.1", "429 Too Many Requests", [("Content-Type", "application/json"),
                                                       ("Retry-After", "3"), ("Content-Length", "2")], [b"{}"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_bytes_on_the_wire_are_gunicorns(case):
    ours, _ = _serve(serving.Response, *case)
    stock, _ = _serve(STOCK, *case)
    assert b"".join(ours) == b"".join(stock)
    assert b"".join(ours).startswith(b"HTTP/1.")


@pytest.mark.parametrize("case", ["json body", "error", "stream, chunked", "stream, HTTP/1.0"])
def test_the_head_leaves_with_the_first_body_piece(case):
    ours, _ = _serve(serving.Response, *CASES[case])
    stock, _ = _serve(STOCK, *CASES[case])
    assert len(ours) == len(stock) - 1
    head, _, body = ours[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and body  # the first send carries head and body


@pytest.mark.parametrize("case", ["HEAD", "204", "no pieces", "empty first piece, chunked"])
def test_a_response_without_a_first_body_piece_still_sends_its_head(case):
    ours, resp = _serve(serving.Response, *CASES[case])
    assert ours and ours[0].startswith(b"HTTP/1.") and ours[0].endswith(b"\r\n\r\n")
    assert resp.headers_sent


def test_a_write_that_gunicorn_refuses_still_sent_the_head_first():
    sock = Sock()
    resp = serving.Response(_request(), sock, Config())
    resp.start_response("200 OK", [("Content-Type", "text/plain")])
    with pytest.raises(TypeError):
        resp.write("not bytes")
    assert len(sock.sends) == 1 and sock.sends[0].startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_config_installs_it_in_each_worker(monkeypatch):
    monkeypatch.setattr(wsgi, "Response", STOCK)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_serving", os.path.join(ROOT, "gunicorn.conf.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    conf.post_worker_init(object())
    assert wsgi.Response is serving.Response
    resp, _ = wsgi.create(_request(), Sock(), ("127.0.0.1", 5000), ("127.0.0.1", 8080), Config())
    assert type(resp) is serving.Response
