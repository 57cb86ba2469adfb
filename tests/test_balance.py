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
    assert table.give({0, 2}) == 1 and table.least_elsewhere(0) is None  # a slot given again starts empty
    assert table.give(set(range(8))) is None


def test_the_least_loaded_other_worker_that_accepts_is_found(table):
    for slot in range(4):
        table.give(set(range(slot)))
    _other(table, 0, 3)
    _other(table, 1, 9)
    _other(table, 2, 1, accepting=False)  # stopping: its few connections do not make it a place to send more
    _other(table, 3, 5)
    assert table.least_elsewhere(0) == 5
    assert table.least_elsewhere(3) == 3
    table.free(0)
    assert table.least_elsewhere(3) == 9


def test_a_worker_alone_has_no_one_to_defer_to(table):
    table.give(set())
    balance.join(table, 0)
    balance._worker.connections = 50
    assert table.least_elsewhere(0) is None and not balance._ahead()


def test_forked_workers_see_one_table(table):
    table.give(set())
    table.give({0})
    pid = os.fork()
    if pid == 0:  # the worker: publish, and leave without running the rest of the test session
        table.set(1, 1, 42)
        os._exit(0)
    os.waitpid(pid, 0)
    assert table.least_elsewhere(0) == 42


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
    srv = cls(("127.0.0.1", 0), handle=handle, spawn=gevent.pool.Pool(100))  # a pool, as gunicorn's worker has
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


def test_each_connection_is_counted_while_open(server, table):
    server.clients.connect(3)
    _until(lambda: len(server.accepted) == 3)
    assert table.cells[1 + 1] == 3 == balance._worker.connections  # slot 0: (accepting, connections)
    server.clients.close()
    _until(lambda: balance._worker.connections == 0)
    assert table.cells[1 + 1] == 0 and table.cells[1] == 1  # none held, still accepting


def test_a_worker_even_with_the_others_takes_new_connections_at_once(server, table):
    _other(table, 1, 2)
    looks = []
    server._look_again = lambda: looks.append(1)
    server.clients.connect(3)  # 0 -> 1 -> 2 -> 3: never more than SLACK over the other's 2 before taking one
    _until(lambda: len(server.accepted) == 3)
    assert looks == []


def test_a_worker_ahead_leaves_a_new_connection_to_the_other_worker(server, table):
    _other(table, 1, 0)
    server.clients.connect(2)
    _until(lambda: len(server.accepted) == 2)  # 2 against 0: now ahead by more than SLACK
    listener = server.socket
    server.clients.connect(1)
    gevent.sleep(balance.POLL)  # the server saw it and deferred
    assert len(server.accepted) == 2 and server._deferring_since is not None
    # The other worker takes it from the shared listening socket (as a second worker would) and publishes.
    with socket.socket(fileno=os.dup(listener.fileno())) as shared:
        taken, _ = shared.accept()
    _other(table, 1, 1)
    _until(lambda: server._deferring_since is None)
    gevent.sleep(5 * balance.POLL)
    assert len(server.accepted) == 2
    taken.close()


def test_a_connection_left_to_a_worker_that_does_not_take_it_is_taken_after_max_defer(server, table):
    _other(table, 1, 0)  # accepting, but its loop never comes round (busy, or stuck)
    server.clients.connect(2)
    _until(lambda: len(server.accepted) == 2)
    sent = time.monotonic()
    server.clients.connect(1)
    _until(lambda: len(server.accepted) == 3)
    assert server.accepted[2][0] - sent >= balance.MAX_DEFER
    assert table.cells[1 + 1] == 3


def test_connections_left_waiting_past_max_defer_are_taken_a_wake_at_a_time(server, table):
    """Not one per MAX_DEFER: a burst to a busy pair of workers would be taken in a few a second."""
    server.max_accept = 4
    _other(table, 1, 0)
    server.clients.connect(2)
    _until(lambda: len(server.accepted) == 2)
    server.clients.connect(4)
    _until(lambda: len(server.accepted) == 6)
    taken = [t for t, _ in server.accepted[2:]]
    assert max(taken) - min(taken) < balance.MAX_DEFER


def test_past_max_defer_a_worker_takes_one_wake_then_defers_again(server, table):
    """A saturated peer comes round less often than MAX_DEFER: the rest of a burst is left to it again."""
    server.max_accept = 4
    _other(table, 1, 0)
    server.clients.connect(2)
    _until(lambda: len(server.accepted) == 2)
    server.clients.connect(8)
    _until(lambda: len(server.accepted) == 10)
    taken = [t for t, _ in server.accepted[2:]]
    assert taken[3] - taken[0] < balance.MAX_DEFER and taken[7] - taken[4] < balance.MAX_DEFER  # a wake each
    assert taken[4] - taken[3] >= balance.MAX_DEFER


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
    assert arbiter.gateway_connections.least_elsewhere(0) is None  # slot 1 freed: 2 was never published
    w = _Worker()
    conf.pre_fork(arbiter, w)
    assert w.gateway_slot == 1  # its replacement takes the slot


def test_each_worker_joins_with_its_slot(monkeypatch, table):
    from gateway import memory, serving
    conf = _conf()
    monkeypatch.setattr(memory, "freeze_loaded", lambda: None)
    monkeypatch.setattr(serving, "install", lambda *a: None)
    worker = _Worker()
    worker.gateway_connections, worker.gateway_slot = table, table.give(set())
    conf.post_worker_init(worker)
    assert balance._worker.table is table and balance._worker.slot == 0 and table.cells[1] == 1
