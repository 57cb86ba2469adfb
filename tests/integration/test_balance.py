"""A burst of keep-alive connections to a 2-worker gateway is shared evenly between its workers
(gateway/balance.py), where whichever worker woke first used to take most of it (12 and 52 of 64)."""
import socket
import sys
import time

import pytest

from tests.integration.procnet import connections
from tests.integration.procnet import workers as _workers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


def _held(pids, port):
    return connections(pids, local_port=port)


def _open(port, n):
    """n connections opened at once, each with a request sent and its answer read; kept open."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    for s in socks:
        s.setblocking(True)
        s.settimeout(10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
    for s in socks:
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return socks


def _until(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_burst_of_connections_is_shared_evenly_between_workers(start_gateway, simulator):
    gw = start_gateway(simulator, workers=2, GATEWAY_KEEPALIVE=60)
    port = int(gw.base_url.rsplit(":", 1)[1])
    _until(lambda: len(_workers(gw.proc.pid)) == 2, "two workers")
    pids = _workers(gw.proc.pid)
    # Both workers up and taking part: a few held connections reach both.
    warm = []
    _until(lambda: warm.extend(_open(port, 1)) or min(_held(pids, port).values()) > 0, "both workers answering")
    for s in warm:
        s.close()
    _until(lambda: sum(_held(pids, port).values()) == 0, "the warm-up connections closed")
    for burst in range(3):
        socks = _open(port, 64)
        try:
            held = _held(pids, port)
            assert sum(held.values()) == 64
            assert max(held.values()) - min(held.values()) <= 4, (burst, held)  # 26/38 to 28/36 before
        finally:
            for s in socks:
                s.close()
        _until(lambda: sum(_held(pids, port).values()) == 0, "the burst's connections closed")
