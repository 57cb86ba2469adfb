"""Client connections spread evenly over gunicorn's workers.

Every worker listens on the same socket and whichever is woken first accepts. wrk's 64 connections, opened at
once to two idle workers, were split 12/52, 13/51, 15/49, 28/36 from one run to the next: the clients on the
fuller worker waited about four times as long as the others for the same work, and below saturation one core
could be full while the other idled. Keep-alive clients (an SDK's connection pool) stay where they landed.

So each worker publishes how many client connections it holds, in a table of shared memory that the master makes
before it forks (one slot a worker, given at fork, freed when the worker exits), and takes new connections up to its
fair share: what the accepting workers hold plus what waits in the accept queue (which Linux reports for a listening
socket), divided among them, plus SLACK. It takes its share in one wake, where a worker alone takes ACCEPT_PER_WAKE
(gateway/serving.py), so a burst is split at once; past its share it leaves what waits to the others: it stops
watching the listening socket and looks again after POLL. It leaves connections waiting at most MAX_DEFER: then it
takes a wake's worth of them, as it would alone, and leaves the rest to the others again, so a saturated worker (its
loop comes round to the listening socket once per round of its clients) does not keep clients waiting longer. If for
STUCK none of the others takes or closes a connection (its loop does not run), it takes what waits as if alone.

Measured here (2 workers, 64 keep-alive connections opened at once): to idle workers, 32/32 every time (before:
26/38, 27/37, 28/36 in three tries). Under wrk's upstream calls, both workers saturated, on a slow day: 32/32, 31/33,
31/33, 27/37 (before: 17/47, 20/44, 15/49, 28/36), all 64 taken in 0.17-0.54 s (before: 0.16-0.57 s). Deferring to the
least-loaded worker instead of taking a share split them 25/39 to 30/34 and took up to 1.3 s: the workers took turns.

This module imports only the standard library: the master loads it (gunicorn.conf.py) before gevent patches
anything.
"""
import mmap
import socket
import struct
import time

SLACK = 1            # connections a worker may take past its fair share
POLL = 0.001         # seconds between looks while deferring
MAX_DEFER = 0.05     # seconds connections may be left waiting for the other workers
STUCK = 0.5          # seconds in which no other worker took or closed a connection while some waited for them
_WAKE_MOST = 64      # connections one wake takes at most, however large its share
SLOTS = 256          # workers a table can hold (gunicorn's TTIN can add workers while it runs)

_FIELDS = 2          # per slot: accepting (0/1), open client connections
_HIGH = 0            # cell 0: one past the highest slot given, so a look reads only the slots in use


class Table:
    """Per-worker connection counts in anonymous shared memory: made in the master, seen by every worker it forks
    afterwards. A cell is one aligned 8-byte integer, written by one process only (its worker, or the master
    when the worker is gone); readers may see a count a moment old, which is all balancing needs."""

    def __init__(self, slots=SLOTS):
        self._mem = mmap.mmap(-1, (1 + slots * _FIELDS) * 8)  # MAP_SHARED | MAP_ANONYMOUS
        self.cells = memoryview(self._mem).cast("q")
        self.slots = slots

    # --- the master

    def give(self, taken):
        """The lowest slot not in `taken` (the slots of the master's live workers), cleared; None if all are."""
        for slot in range(self.slots):
            if slot not in taken:
                self.free(slot)
                self.cells[_HIGH] = max(self.cells[_HIGH], slot + 1)
                return slot
        return None

    def free(self, slot):
        base = 1 + slot * _FIELDS
        self.cells[base] = self.cells[base + 1] = 0

    # --- a worker

    def set(self, slot, accepting, connections):
        base = 1 + slot * _FIELDS
        self.cells[base + 1] = connections
        self.cells[base] = accepting

    def accepting(self, but=None):
        """The connections held by each worker that accepts (but the one in slot `but`)."""
        cells, held = self.cells, []
        for slot in range(cells[_HIGH]):
            base = 1 + slot * _FIELDS
            if cells[base] and slot != but:
                held.append(cells[base + 1])
        return held


class _Worker:
    """This worker's slot and count (one per process: a worker with several listening sockets counts them all)."""
    table = None
    slot = None
    connections = 0

    def publish(self, accepting=True):
        if self.table is not None:
            self.table.set(self.slot, int(accepting), self.connections)


_worker = _Worker()


def join(table, slot):
    """In a worker, once, before its servers start: take part in balancing with this slot. The others leave it
    connections once its server listens (Balanced.start), not while it still loads."""
    _worker.table, _worker.slot, _worker.connections = table, slot, 0
    _worker.publish(accepting=False)


def _queued(sock):
    """Connections waiting in the listening socket's accept queue (Linux: TCP_INFO's tcpi_unacked, for a
    listening socket); None where that cannot be asked."""
    try:
        return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32), 24)[0]
    except (OSError, AttributeError, struct.error):
        return None


def _share(sock):
    """(how many more connections this worker should take, how many wait): its fair share of what the accepting
    workers hold and what waits, less what it holds, plus SLACK. The share is None when it is alone (no limit)."""
    queued = _queued(sock)
    if _worker.table is None or queued is None:  # a Unix socket: no queue length to share out
        return None, queued
    held = _worker.table.accepting()
    if len(held) < 2:
        return None, queued
    waiting = max(1, queued)  # asked when the socket is readable: one at least
    return -(-(sum(held) + waiting) // len(held)) + SLACK - _worker.connections, queued


class Balanced:
    """A gevent server (mixed in before it) that takes its share of new connections and leaves the rest to the
    other workers."""
    _deferring_since = None  # when this server last began to leave what waits to the others
    _overdue = 0             # connections taken since that was more than MAX_DEFER ago
    _stalled_since = None    # when connections began to wait for the others, or the others last moved
    _peers = None            # what the others held then

    def start(self):
        super().start()
        _worker.publish(accepting=True)

    def _do_read(self):
        # A wake takes up to this worker's share at once, where a worker alone takes ACCEPT_PER_WAKE: 64
        # connections opened at once to two idle workers are split in one wake each.
        share, _ = _share(self.socket)
        if share is None or share <= self.max_accept:
            return super()._do_read()
        kept, self.max_accept = self.max_accept, min(share, _WAKE_MOST)
        try:
            return super()._do_read()
        finally:
            self.max_accept = kept

    def do_read(self):
        share, queued = _share(self.socket)
        if queued == 0:
            self._settled()
            return None  # nothing waits (the loop asks again after each accept): the next one wakes it
        if share is not None and share <= 0:
            if not self._others_stuck():
                now = time.monotonic()
                if self._deferring_since is None:
                    self._deferring_since = now
                if now - self._deferring_since < MAX_DEFER:
                    self.stop_accepting()
                    self._timer = self.loop.timer(POLL)  # stop_accepting() and close() stop it
                    self._timer.start(self._look_again)
                    return None
                # Overdue: the others have not taken what waits. Take a wake's worth (serving.ACCEPT_PER_WAKE), as
                # a worker alone would, then leave the rest to them again: a saturated peer comes round less often
                # than MAX_DEFER, and taking all that waits would give this worker most of a burst.
                self._overdue += 1
                if self._overdue >= self.max_accept:
                    self._deferring_since, self._overdue = None, 0
        else:
            self._settled()
        accepted = super().do_read()
        if accepted:
            _worker.connections += 1
            _worker.publish()
        return accepted

    def _settled(self):
        self._deferring_since = self._stalled_since = self._peers = None
        self._overdue = 0

    def _others_stuck(self):
        """Whether connections have waited STUCK for the other workers while none of them took or closed one: their
        loops do not run (a blocking call, SIGSTOP), and a wake's worth each MAX_DEFER would leave clients waiting
        for seconds. This worker then takes what waits as if alone, until one of them moves."""
        now, peers = time.monotonic(), _worker.table.accepting(but=_worker.slot)
        if peers != self._peers:
            self._peers, self._stalled_since = peers, now
        return now - self._stalled_since >= STUCK

    def _look_again(self):
        share, queued = _share(self.socket)
        if self._deferring_since is not None and (queued == 0 or share is None or share > 0):
            self._settled()  # the others took them, or this worker's share grew: the next connection starts afresh
        self._start_accepting_if_started()

    def do_close(self, *args):
        try:
            super().do_close(*args)
        finally:
            _worker.connections -= 1
            _worker.publish(accepting=self.started)

    def close(self):
        _worker.publish(accepting=False)  # stopping: the others must not leave connections to it
        super().close()
