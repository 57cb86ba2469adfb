"""Client connections spread evenly over gunicorn's workers.

Every worker listens on the same socket and whichever is woken first accepts. wrk's 64 connections, opened at
once to two idle workers, were split 12/52, 13/51, 15/49, 28/36 from one run to the next: the clients on the
fuller worker waited about four times as long as the others for the same work, and below saturation one core
could be full while the other idled. Keep-alive clients (an SDK's connection pool) stay where they landed.

So each worker publishes how many client connections it holds, in a table of shared memory that the master makes
before it forks (one slot a worker, given at fork, freed when the worker exits). A worker holding more than SLACK
connections over the least-loaded worker that still accepts leaves a waiting connection to that one: it stops
watching the listening socket and looks again after POLL. It leaves connections waiting at most MAX_DEFER: then it
takes a wake's worth of them (gateway/serving.py, ACCEPT_PER_WAKE), as it would alone, and leaves the rest to the
others again. A worker too busy to take them in that time (a saturated worker's loop comes round to its listening
socket once per round of its clients; a stuck one never does) does not keep clients waiting longer, nor take in a
burst much more slowly.

Measured here (2 workers, 64 keep-alive connections opened at once): to idle workers, 32/32 every time (before:
26/38, 27/37, 28/36 in three tries). Under wrk's upstream calls on a slow day, where a saturated worker's loop round
(100-250 ms) is longer than MAX_DEFER, the split is still uneven: 22/42 to 30/34 (before: 15/49 to 29/35).

This module imports only the standard library: the master loads it (gunicorn.conf.py) before gevent patches
anything.
"""
import mmap
import time

SLACK = 1            # connections a worker may hold over the least-loaded one before it defers
POLL = 0.001         # seconds between looks while deferring
MAX_DEFER = 0.05     # seconds connections may be left waiting for the other workers
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

    def least_elsewhere(self, slot):
        """The fewest connections held by another worker that accepts; None if there is none."""
        cells, least = self.cells, None
        for other in range(cells[_HIGH]):
            base = 1 + other * _FIELDS
            if other != slot and cells[base]:
                held = cells[base + 1]
                if least is None or held < least:
                    least = held
        return least


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
    """In a worker, once, before its servers start: take part in balancing with this slot."""
    _worker.table, _worker.slot, _worker.connections = table, slot, 0
    _worker.publish()


def _ahead():
    if _worker.table is None:
        return False
    least = _worker.table.least_elsewhere(_worker.slot)
    return least is not None and _worker.connections > least + SLACK


def _pending(sock):
    """Whether a connection waits on the listening socket (a look that does not block, nor yield)."""
    from gevent import monkey
    poll = monkey.get_original("select", "poll")()
    poll.register(sock.fileno(), 1)  # POLLIN
    return bool(poll.poll(0))


class Balanced:
    """A gevent server (mixed in before it) that defers new connections to less-loaded workers."""
    _deferring_since = None  # when this server first left the connections now waiting to the others
    _overdue = 0             # connections taken since that was more than MAX_DEFER ago

    def do_read(self):
        if _ahead():
            if not _pending(self.socket):
                self._deferring_since, self._overdue = None, 0
                return None  # nothing waits (the loop asks again after each accept): the next one wakes it
            now = time.monotonic()
            if self._deferring_since is None:
                self._deferring_since = now
            if now - self._deferring_since < MAX_DEFER:
                self.stop_accepting()
                self._timer = self.loop.timer(POLL)  # stop_accepting() and close() stop it
                self._timer.start(self._look_again)
                return None
            # Overdue: the others have not taken what waits. Take a wake's worth (serving.ACCEPT_PER_WAKE), as a
            # worker alone would, then leave the rest to them again: a saturated peer comes round less often than
            # MAX_DEFER, and taking all that waits would give this worker most of a burst.
            self._overdue += 1
            if self._overdue >= self.max_accept:
                self._deferring_since, self._overdue = None, 0
        else:
            self._deferring_since, self._overdue = None, 0
        accepted = super().do_read()
        if accepted:
            _worker.connections += 1
            _worker.publish()
        return accepted

    def _look_again(self):
        if self._deferring_since is not None and (not _ahead() or not _pending(self.socket)):
            # The others took them, or caught up: the next connection starts afresh.
            self._deferring_since, self._overdue = None, 0
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
