"""gateway/serving.py's response puts the same bytes on the wire as gunicorn's own, in fewer sends."""
import errno
import json
import importlib.util
import os
import subprocess
import sys
import textwrap

import gevent.server
import gevent.socket
import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from gateway import memory, serving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOCK = wsgi.Response


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):  # two responses built a moment apart must not straddle a second
    monkeypatch.setattr(util, "http_date", lambda *a: "Fri, 27 Nov 2026 00:00:00 GMT")


class Sock:
    """Keeps each send; `room` bytes at most per `send` (a full socket buffer takes part of a piece)."""

    def __init__(self, room=None):
        self.sends, self.room, self.calls = [], room, []
        self.timeout = None

    def gettimeout(self):
        return self.timeout

    def settimeout(self, seconds):
        self.timeout = seconds

    def sendall(self, data):
        self.calls.append("sendall")
        self.sends.append(bytes(data))

    def send(self, data):
        self.calls.append("send")
        taken = bytes(data[:self.room] if self.room is not None else data)
        self.sends.append(taken)
        return len(taken)


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
    from gunicorn.http import message
    from gunicorn.workers import ggevent
    monkeypatch.setattr(ggevent, "StreamServer", ggevent.StreamServer)
    stock_handle_request = ggevent.GeventWorker.handle_request
    monkeypatch.setattr(ggevent.GeventWorker, "handle_request", stock_handle_request)
    monkeypatch.setattr(wsgi, "Response", STOCK)
    monkeypatch.setattr(message, "_ip_in_allow_list", message._ip_in_allow_list)
    monkeypatch.setattr(util, "write_error", util.write_error)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_serving", os.path.join(ROOT, "gunicorn.conf.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    frozen = []
    monkeypatch.setattr(memory, "freeze_loaded", lambda: frozen.append(True))  # not this test process's objects
    conf.post_worker_init(object())
    assert frozen == [True]
    assert wsgi.Response is serving.Response
    resp, _ = wsgi.create(_request(), Sock(), ("127.0.0.1", 5000), ("127.0.0.1", 8080), Config())
    assert type(resp) is serving.Response
    assert hasattr(util.http_date, "unmemoized") and hasattr(message._ip_in_allow_list, "unmemoized")
    assert util.write_error is serving.write_error
    assert ggevent.StreamServer.unpatched is gevent.server.StreamServer
    assert ggevent.GeventWorker.handle_request.unpatched is stock_handle_request
    conf.post_worker_init(object())  # twice (a reload): nothing is wrapped twice
    assert ggevent.StreamServer.unpatched is gevent.server.StreamServer
    assert ggevent.GeventWorker.handle_request.unpatched is stock_handle_request
    assert not hasattr(util.http_date.unmemoized, "unmemoized")
    assert not hasattr(message._ip_in_allow_list.unmemoized, "unmemoized")


def test_the_date_header_is_formatted_once_a_second_as_gunicorn_formats_it(monkeypatch):
    import email.utils
    calls = []

    def stock(timestamp=None):
        calls.append(timestamp)
        return email.utils.formatdate(timestamp, localtime=False, usegmt=True)
    memo = serving._date_memo(stock)
    now = [1795760000.25]
    monkeypatch.setattr(serving.time, "time", lambda: now[0])
    assert memo() == stock(now[0]) == "Fri, 27 Nov 2026 06:13:20 GMT"
    calls.clear()
    now[0] = 1795760000.99
    assert memo() == "Fri, 27 Nov 2026 06:13:20 GMT" and calls == []   # the same second: not formatted again
    now[0] = 1795760001.01
    assert memo() == "Fri, 27 Nov 2026 06:13:21 GMT" and len(calls) == 1
    assert memo(0) == "Thu, 01 Jan 1970 00:00:00 GMT"                   # an explicit time: formatted as asked


def test_whether_a_peer_may_set_forwarded_headers_is_remembered_per_address():
    from gunicorn.http import message
    original = getattr(message._ip_in_allow_list, "unmemoized", message._ip_in_allow_list)
    calls = []

    def counted(*args):
        calls.append(args[0])
        return original(*args)
    memo = serving._peer_memo(counted)
    cfg = Config()
    cfg.set("forwarded_allow_ips", "127.0.0.1,10.0.0.0/8")
    allow, nets = cfg.forwarded_allow_ips, cfg.forwarded_allow_networks()
    for ip, trusted in (("127.0.0.1", True), ("10.1.2.3", True), ("192.168.1.1", False), ("not-an-ip", False)):
        assert memo(ip, allow, nets) is trusted is original(ip, allow, nets)
        assert memo(ip, allow, nets) is trusted
    assert calls == ["127.0.0.1", "10.1.2.3", "192.168.1.1", "not-an-ip"]  # once per address
    everyone = Config()
    everyone.set("forwarded_allow_ips", "*")
    assert memo("192.168.1.1", everyone.forwarded_allow_ips, everyone.forwarded_allow_networks()) is True


@pytest.mark.parametrize("case", ["json body", "stream, chunked", "stream, HTTP/1.0"])
def test_each_piece_goes_out_in_one_send_when_the_socket_takes_it(case):
    sock = Sock()
    resp = serving.Response(_request(*CASES[case][:2]), sock, Config())
    resp.start_response(*CASES[case][2:4])
    for piece in CASES[case][4]:
        resp.write(piece)
    resp.close()
    assert "sendall" not in sock.calls   # gevent's sendall asks the kernel for SO_SNDBUF on every call
    stock, _ = _serve(STOCK, *CASES[case])
    assert b"".join(sock.sends) == b"".join(stock)


@pytest.mark.parametrize("case", ["json body", "stream, chunked"])
def test_what_a_full_socket_did_not_take_is_sent_after(case):
    sock = Sock(room=7)
    resp = serving.Response(_request(*CASES[case][:2]), sock, Config())
    resp.start_response(*CASES[case][2:4])
    for piece in CASES[case][4]:
        resp.write(piece)
    resp.close()
    stock, _ = _serve(STOCK, *CASES[case])
    assert b"".join(sock.sends) == b"".join(stock) and all(len(sent) <= 7 for sent in sock.sends)


class _Stuck(Sock):
    """A socket whose client took `room` bytes, then nothing: its sends time out, as gevent's do."""

    def send(self, data):
        if self.room == 0:
            raise TimeoutError("timed out")
        taken = super().send(data)
        self.room -= taken
        return taken


def test_a_client_that_takes_nothing_in_time_is_treated_as_gone():
    sock = _Stuck(room=10)
    with pytest.raises(BrokenPipeError) as e:
        serving._send(sock, b"x" * 100)
    assert e.value.errno == errno.EPIPE  # gunicorn closes the connection quietly, as for a client gone
    assert b"".join(sock.sends) == b"x" * 10


def test_each_wait_on_a_client_is_bounded_by_the_client_timeout(monkeypatch):
    monkeypatch.setattr(serving, "_client_timeout", 2.5)
    sock = Sock()
    serving.Response(_request(), sock, Config())
    assert sock.gettimeout() == 2.5
    sock.settimeout(7)  # one set already (by an operator's own worker class, say) is left as it is
    serving.Response(_request(), sock, Config())
    assert sock.gettimeout() == 7
    monkeypatch.setattr(serving, "_client_timeout", None)  # GATEWAY_CLIENT_TIMEOUT=0
    fresh = Sock()
    serving.Response(_request(), fresh, Config())
    assert fresh.gettimeout() is None


class _Raw:
    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0

    def sendall(self, data):
        self.data += data


@pytest.mark.parametrize("status, reason, mesg, type_, code, text", [
    (431, "Request Header Fields Too Large", "Error parsing headers: 'limit request headers fields size'",
     "invalid_request_error", "request_header_fields_too_large", "Error parsing headers"),
    (400, "Bad Request", "Invalid Request Line 'GARBAGE <html>'", "invalid_request_error", "invalid_request",
     "GARBAGE <html>"),
    (500, "Internal Server Error", "", "server_error", None, "internal error"),
])
def test_gunicorns_own_refusals_are_openai_errors(status, reason, mesg, type_, code, text):
    import json
    sock = _Raw()
    serving.write_error(sock, status, reason, mesg)
    head, _, body = sock.data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == f"HTTP/1.1 {status} {reason}"
    assert "Content-Type: application/json" in lines and "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, code) and text in error["message"]


@pytest.mark.parametrize("gunicorn_sets, takes", [(None, 100), (1, serving.ACCEPT_PER_WAKE), (50, 50)])
def test_a_worker_takes_at_least_a_burst_of_connections_a_wake(gunicorn_sets, takes):
    server = serving._accepting(gevent.server.StreamServer)(("127.0.0.1", 0), handle=lambda sock, addr: None)
    if gunicorn_sets is not None:
        server.max_accept = gunicorn_sets  # gunicorn sets 1 when it runs several workers
    assert server.max_accept == takes


def test_connections_opened_at_once_are_taken_in_one_wake_not_one_a_wake():
    """A saturated worker comes back to its listening socket once per round of its clients: each wake takes
    several of a burst, not one."""
    import socket
    accepted = []
    server = serving._accepting(gevent.server.StreamServer)(("127.0.0.1", 0),
                                                             handle=lambda sock, addr: accepted.append(sock))
    server.max_accept = 1  # as gunicorn sets it for several workers
    server.init_socket()
    clients = [socket.create_connection(server.address) for _ in range(3 * serving.ACCEPT_PER_WAKE)]  # queued
    wakes = []
    read = server._do_read
    server._do_read = lambda: (wakes.append(len(accepted)), read())
    try:
        server.start()
        with gevent.Timeout(5):
            while len(accepted) < len(clients):
                gevent.sleep(0.01)
    finally:
        server.stop()
        for c in clients + accepted:
            c.close()
    assert len(wakes) == 3  # taking one a wake, as gunicorn sets it: twelve


def _turns(take_turn):
    """The order in which five requests on one keep-alive connection and another client's waiting request are
    served, each handled by `take_turn`; and how many turns were taken. In a gevent
    hub of its own (a subprocess: not this test process's)."""
    code = textwrap.dedent(f"""
        from gevent import monkey; monkey.patch_all()
        import gevent, gevent.socket, json, time
        from gateway import serving, turns as turns_module
        order, turns, sleep = [], [], time.sleep  # gevent's, patched in
        time.sleep = lambda seconds=0: (seconds == turns_module.TURN and turns.append(1), sleep(seconds))

        def handle(self, *args):
            order.append("request")
        take = {take_turn}(handle)
        mine, theirs = gevent.socket.socketpair()

        def other_client():
            gevent.socket.wait_read(mine.fileno())
            order.append("other")
        waiting = gevent.spawn(other_client)
        sleep(0.05)  # it waits on its socket
        theirs.sendall(b"GET / HTTP/1.1")  # and its request has come: it is ready to be served
        for _ in range(5):
            take(None, "listener", "req", "sock", "addr")
        waiting.join(5)
        print(json.dumps([order, len(turns)]))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_between_two_requests_on_a_connection_the_workers_other_clients_have_their_turn():
    order, turns = _turns("serving._taking_turns")
    # Served at the loop's next poll: after the request in hand and at most one more (the timer and the socket
    # come due in the same poll), not after all of them.
    assert sorted(order) == ["other"] + ["request"] * 5 and order.index("other") <= 2, order
    assert turns == 5
    # What gunicorn does alone: the connection is served on, and the other client waits for all of it.
    assert _turns("(lambda handle: lambda *a: handle(*a))")[0] == ["request"] * 5 + ["other"]


def test_a_connection_killed_during_its_turn_is_closed_quietly(monkeypatch):
    # gunicorn's keep-alive loop closes a connection on StopIteration; anything else goes to its error path,
    # which logs an error and writes a 500 to a client that already has its answer.
    monkeypatch.setattr("time.sleep", gevent.sleep)  # as gevent's patching leaves it in a worker
    take = serving._taking_turns(lambda *args: None)
    handler = gevent.spawn(take, None, "listener", "req", "sock", "addr")
    gevent.sleep(0)  # it has answered and waits for its turn
    handler.kill()
    assert isinstance(handler.exception, StopIteration)
