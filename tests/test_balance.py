"""gateway/balance.py: workers publish their connection counts in shared memory, and one that holds more than
another leaves new connections to it, for a bounded time."""
import importlib.util
import os
import socket
import time

import gevent
import gevent.pool
import gevent.server
import pytest

from gateway import balance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def table():
    t = balance.Table(slots=8)
    yield t
    balance._worker.table, balance._worker.slot, balance._worker.connections = None, None, 0


def _other(table, slot, connections, accepting=True):
    """What another worker would publish in its slot."""
    table.set(slot, int(accepting), connections)


def test_the_master_gives_the_lowest_free_slot_cleared(table):
    assert [table.give(set()), table.give({0}), table.give({0, 1})] == [0, 1, 2]
    _other(table, 1, 7)
    assert table.give({0, 2}) == 1 and table.accepting() == []  # a slot given again starts empty, not accepting
    assert table.give(set(range(8))) is None


def test_the_workers_that_accept_are_counted(table):
    for slot in range(4):
        table.give(set(range(slot)))
    _other(table, 0, 3)
    _other(table, 1, 9)
    _other(table, 2, 1, accepting=False)  # stopping: its few connections do not make it a place to send more
    _other(table, 3, 5)
    assert table.accepting() == [3, 9, 5]
    table.free(0)
    assert table.accepting() == [9, 5]


def test_a_worker_alone_takes_whatever_waits(table):
    table.give(set())
    balance.join(table, 0)
    balance._worker.connections = 50
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert balance._share(listener)[0] is None


def test_the_accept_queue_is_read_from_the_listening_socket(table):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
        try:
            _until(lambda: balance._queued(listener) == 5)
        finally:
            for c in clients:
                c.close()


def test_forked_workers_see_one_table(table):
    table.give(set())
    table.give({0})
    pid = os.fork()
    if pid == 0:  # the worker: publish, and leave without running the rest of the test session
        table.set(1, 1, 42)
        os._exit(0)
    os.waitpid(pid, 0)
    assert table.accepting() == [42]


# --- a server that defers


class _Clients:
    def __init__(self, address):
        self.address, self.socks = address, []

    def connect(self, n=1):
        for _ in range(n):
            self.socks.append(socket.create_connection(self.address))

    def close(self):
        for s in self.socks:
            s.close()


@pytest.fixture
def server(table):
    """A balanced gevent server in slot 0 that holds each connection until its client closes it; slot 1 is the
    other worker, not accepting until the test says."""
    table.give(set())
    table.give({0})
    balance.join(table, 0)
    accepted = []

    def handle(sock, addr):
        accepted.append((time.monotonic(), sock))
        sock.recv(1)

    cls = type("Server", (balance.Balanced, gevent.server.StreamServer), {})
    srv = cls(("127.0.0.1", 0), handle=handle, spawn=gevent.pool.Pool(1000))  # a pool, as gunicorn's worker has
    srv.accepted = accepted
    srv.init_socket()
    srv.start()
    clients = _Clients(srv.address)
    srv.clients = clients
    yield srv
    clients.close()
    srv.stop(timeout=1)  # waits for the handlers, so none closes its connection in the next test
    assert balance._worker.connections == 0


def _until(predicate, timeout=5):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.001)


def _hold(server, table, n):
    """The server takes n connections while the other worker does not accept; then the other accepts, holding none."""
    _other(table, 1, 0, accepting=False)
    server.clients.connect(n)
    _until(lambda: len(server.accepted) == n)
    _other(table, 1, 0)


def test_each_connection_is_counted_while_open(server, table):
    server.clients.connect(3)
    _until(lambda: len(server.accepted) == 3)
    assert table.cells[1 + 1] == 3 == balance._worker.connections  # slot 0: (accepting, connections)
    server.clients.close()
    _until(lambda: balance._worker.connections == 0)
    assert table.cells[1 + 1] == 0 and table.cells[1] == 1  # none held, still accepting


def test_a_burst_is_split_in_one_wake_each(server, table):
    """20 connections waiting, two idle workers holding none: this one takes its half (and SLACK) in one wake,
    though a wake takes 4 when a worker is alone (serving.ACCEPT_PER_WAKE)."""
    server.max_accept = 4
    _other(table, 1, 0)
    wakes = []  # connections each wake took
    read = server._do_read

    def counting():
        before = balance._worker.connections
        read()
        wakes.append(balance._worker.connections - before)
    server.stop_accepting()
    server._do_read = counting  # the listening socket's watcher calls what it was started with
    server.clients.connect(20)  # queued in the kernel: the server does not run until this test yields
    server.start_accepting()
    _until(lambda: len(server.accepted) >= 10 + balance.SLACK)
    gevent.sleep(balance.MAX_DEFER / 5)
    assert len(server.accepted) == 10 + balance.SLACK
    assert [n for n in wakes if n] == [10 + balance.SLACK]
    assert server._deferring_since is not None  # the rest is left to the other worker


def test_a_worker_within_its_share_takes_new_connections_at_once(server, table):
    _other(table, 1, 2)
    looks = []
    server._look_again = lambda: looks.append(1)
    server.clients.connect(3)  # one at a time: 1 -> 2 -> 3, never past the other's 2 and SLACK
    _until(lambda: len(server.accepted) == 3)
    assert looks == []


def test_a_worker_past_its_share_leaves_a_new_connection_to_the_other_worker(server, table):
    _hold(server, table, 3)  # 3 against 0: a 4th would put it past its share (2 of 4) and SLACK
    listener = server.socket
    server.clients.connect(1)
    _until(lambda: server._deferring_since is not None)  # the server saw it and deferred
    assert len(server.accepted) == 3
    # The other worker takes it from the shared listening socket (as a second worker would) and publishes.
    with socket.socket(fileno=os.dup(listener.fileno())) as shared:
        taken, _ = shared.accept()
    _other(table, 1, 1)
    _until(lambda: server._deferring_since is None)
    gevent.sleep(5 * balance.POLL)
    assert len(server.accepted) == 3
    taken.close()


def test_a_connection_left_to_a_worker_that_does_not_take_it_is_taken_after_max_defer(server, table):
    _hold(server, table, 3)  # the other accepts, but its loop never comes round (busy, or stuck)
    sent = time.monotonic()
    server.clients.connect(1)
    _until(lambda: len(server.accepted) == 4)
    assert balance.MAX_DEFER <= server.accepted[3][0] - sent < balance.STUCK
    assert table.cells[1 + 1] == 4


def test_a_worker_takes_what_waits_as_if_alone_once_the_others_are_stuck(server, table):
    """The other worker accepts but never moves (a blocking call, SIGSTOP). Of 100 new connections this one's share
    is 31 (70 each, and SLACK); a wake's worth (2 here) each MAX_DEFER would take the other 69 in 1.7 s. After STUCK
    this worker takes them all."""
    server.max_accept = 2
    _hold(server, table, 40)
    sent = time.monotonic()
    server.clients.connect(100)
    _until(lambda: len(server.accepted) == 140)
    assert balance.STUCK <= server.accepted[-1][0] - sent < 1.0


def test_past_max_defer_a_worker_takes_one_wake_then_defers_again(server, table):
    """A saturated peer comes round less often than MAX_DEFER: the rest of a burst is left to it again, not all
    taken, nor taken one per MAX_DEFER."""
    server.max_accept = 4
    _hold(server, table, 10)  # 10 against 0: 8 more would still leave this one past its share (9) and SLACK
    server.clients.connect(8)
    _until(lambda: len(server.accepted) == 18)
    taken = [t for t, _ in server.accepted[10:]]
    assert taken[4] - taken[3] >= balance.MAX_DEFER  # the second wake's worth waited again
    assert taken[3] - taken[0] < taken[4] - taken[3] and taken[7] - taken[4] < taken[4] - taken[3]  # a wake each


def test_a_worker_is_left_connections_only_once_it_listens(table):
    table.give(set())
    balance.join(table, 0)
    assert table.cells[1] == 0  # still loading: the others must not leave it connections
    cls = type("Server", (balance.Balanced, gevent.server.StreamServer), {})
    srv = cls(("127.0.0.1", 0), handle=lambda sock, addr: None)
    srv.start()
    try:
        assert table.cells[1] == 1
    finally:
        srv.stop()
    assert table.cells[1] == 0


def test_a_worker_that_stops_accepting_says_so(server, table):
    assert table.cells[1] == 1
    server.close()
    assert table.cells[1] == 0


# --- gunicorn's hooks


def _conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf_balance", os.path.join(ROOT, "gunicorn.conf.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    return conf


class _Arbiter:
    def __init__(self):
        self.WORKERS = {}


class _Worker:
    pid = None


def test_the_master_gives_each_worker_a_slot_and_takes_it_back_when_it_exits(monkeypatch):
    conf = _conf()
    arbiter = _Arbiter()
    workers = []
    for pid in (101, 102, 103):
        w = _Worker()
        conf.pre_fork(arbiter, w)
        w.pid = pid
        arbiter.WORKERS[pid] = w
        workers.append(w)
    assert [w.gateway_slot for w in workers] == [0, 1, 2]
    assert all(w.gateway_connections is arbiter.gateway_connections for w in workers)
    arbiter.gateway_connections.set(1, 1, 17)
    monkeypatch.setattr("prometheus_client.multiprocess.mark_process_dead", lambda pid: None)
    conf.child_exit(arbiter, workers[1])
    del arbiter.WORKERS[102]
    assert arbiter.gateway_connections.accepting() == []  # slot 1 freed: 0 and 2 never published
    w = _Worker()
    conf.pre_fork(arbiter, w)
    assert w.gateway_slot == 1  # its replacement takes the slot
    arbiter.gateway_connections.set(2, 1, 5)
    conf.worker_exit(arbiter, workers[2])  # a worker stopping, or one gunicorn found gone without reaping it
    assert arbiter.gateway_connections.accepting() == []


def test_each_worker_joins_with_its_slot(monkeypatch, table):
    from gateway import memory, serving
    conf = _conf()
    monkeypatch.setattr(memory, "freeze_loaded", lambda: None)
    monkeypatch.setattr(serving, "install", lambda *a: None)
    worker = _Worker()
    worker.gateway_connections, worker.gateway_slot = table, table.give(set())
    conf.post_worker_init(worker)
    assert balance._worker.table is table and balance._worker.slot == 0
