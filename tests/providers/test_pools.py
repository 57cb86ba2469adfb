"""Upstream keep-alive pools: a connection idle past the limit is closed; one in use never is."""
import http.server
import json
import threading
import time

import pytest

from gateway.providers import fetch, pools, transport


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.peers.append(self.client_address[1])
        self.server.paths.append(self.path)
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.peers = []
    srv.paths = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def server():
    srv = _serve()
    yield srv
    srv.shutdown()
    srv.server_close()


def _call(session, srv, stream=False):
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1/chat/completions"
    resp = session.post_json(url, {}, {"model": "m"}, timeout=5, stream=stream)
    assert resp.status_code == 200
    return resp


def test_a_connection_idle_past_the_limit_is_closed_and_the_next_call_opens_a_new_one(server):
    session = transport.make_session(4)
    _call(session, server)
    _call(session, server)
    assert len(set(server.peers)) == 1                  # kept alive between calls
    now = time.monotonic()
    assert pools.close_idle(session, max_idle=5, now=now + 1, keep=0) == 0   # idle 1 s: kept
    assert pools.close_idle(session, max_idle=5, now=now + 6, keep=0) == 1   # idle 6 s: closed
    assert pools.close_idle(session, max_idle=5, now=now + 7, keep=0) == 0   # and gone from the pool
    _call(session, server)
    assert len(set(server.peers)) == 2                  # a new connection, and the call works


def test_a_connection_in_use_is_never_closed(server):
    session = transport.make_session(4)
    held = _call(session, server, stream=True)          # its body not read: the connection is in use
    assert pools.close_idle(session, max_idle=0, now=time.monotonic() + 3600, keep=0) == 0
    assert held.json() == {"ok": True}


def test_only_the_connections_idle_too_long_are_closed(server):
    session = transport.make_session(4)
    first = _call(session, server, stream=True)
    second = _call(session, server, stream=True)        # two connections open at once
    first.content, second.content                       # noqa: B018 - both back in the pool
    assert len(set(server.peers)) == 2
    [old, new] = [c for c in _pool(session).pool.queue if c is not None]
    old.gateway_idle_since -= 10
    assert pools.close_idle(session, max_idle=5, keep=0) == 1
    assert [c for c in _pool(session).pool.queue if c is not None] == [new]
    assert old.sock is None and new.sock is not None


def test_the_most_recently_used_stay_open_however_long_idle(server):
    session = transport.make_session(8)
    held = [_call(session, server, stream=True) for _ in range(3)]
    for resp in held:
        resp.content  # noqa: B018 - back in the pool, oldest first
    conns = [c for c in _pool(session).pool.queue if c is not None]
    assert len(conns) == 3
    later = time.monotonic() + 3600
    assert pools.close_idle(session, max_idle=5, now=later, keep=2) == 1
    assert [c for c in _pool(session).pool.queue if c is not None] == conns[1:]
    assert pools.close_idle(session, max_idle=5, now=later) == 0        # the default keeps a few warm


def test_connections_through_a_proxy_keep_the_idle_clock_and_are_closed(server, monkeypatch):
    port = server.server_address[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")      # the test server answers as the proxy
    session = transport.make_session(4)
    resp = session.post_json("http://upstream.invalid/v1/chat/completions", {}, {"model": "m"}, timeout=5,
                             stream=False)
    assert resp.status_code == 200 and server.peers
    assert pools.close_idle(session, max_idle=5, now=time.monotonic() + 6, keep=0) == 1


def test_the_pool_is_remembered_per_url_while_its_manager_holds_it():
    servers = [_serve() for _ in range(5)]
    try:
        session = transport.make_session(4)          # its manager keeps 4 origins: the fifth evicts the first
        adapter = session.get_adapter("http://x")
        _call(session, servers[0])
        [first] = adapter._pool_for.values()
        _call(session, servers[0])
        assert list(adapter._pool_for.values()) == [first] and len(set(servers[0].peers)) == 1
        for srv in servers[1:]:
            _call(session, srv)
        assert not pools._held(adapter.poolmanager, first)     # evicted by urllib3
        _call(session, servers[0])
        again = adapter._pool_for[next(k for k in adapter._pool_for if str(servers[0].server_address[1]) in k[0])]
        assert again is not first and pools._held(adapter.poolmanager, again)
        assert pools.close_idle(session, max_idle=0, now=time.monotonic() + 1, keep=0) == 4  # all reachable
        session.close()
        _call(session, servers[0])                   # closed with the session: made again
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def test_image_download_pools_keep_the_idle_clock():
    adapter = fetch._PublicOnlyAdapter()
    for scheme in ("http", "https"):
        assert issubclass(adapter.poolmanager.pool_classes_by_scheme[scheme], pools._IdleSince)


def _pool(session):
    [pool] = pools._pools(session.get_adapter("http://x").poolmanager)
    return pool


def test_the_request_line_carries_the_path_and_query_each_time(server, monkeypatch):
    session = transport.make_session(4)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for path in ("/v1/chat/completions", "/v1beta/models/m:generateContent?alt=sse", "/v1/chat/completions"):
        session.post_json(base + path, {}, {"model": "m"}, timeout=5, stream=False)
    assert server.paths == ["/v1/chat/completions", "/v1beta/models/m:generateContent?alt=sse",
                            "/v1/chat/completions"]
    monkeypatch.setenv("HTTP_PROXY", base)   # through a proxy: the absolute URL, as requests sends it
    session = transport.make_session(4)
    session.post_json("http://upstream.invalid/v1/chat/completions?x=1", {}, {"model": "m"}, timeout=5,
                      stream=False)
    assert server.paths[-1] == "http://upstream.invalid/v1/chat/completions?x=1"


def test_a_response_is_whole_but_keeps_no_cookie(server):
    session = transport.make_session(4)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    resp = session.post_json(url, {}, {"model": "m"}, timeout=5, stream=False)
    assert (resp.status_code, resp.reason, resp.url) == (200, "OK", url)
    assert resp.headers["content-type"] == "application/json; charset=utf-8" and resp.encoding == "utf-8"
    assert resp.json() == {"ok": True} and resp.request.url == url
    assert resp.headers["Set-Cookie"] and len(resp.cookies) == 0 and len(session.cookies) == 0
