"""LogWriter: the in-memory queue, flush and stop, and the background thread that takes batches from the
queue and sends each to the database, else the spool. The guarantees are in the package docstring."""
import atexit
import collections
import logging
import os
import threading
import time

from gateway.deadline import gevent_patched
from gateway.store.logs import normalize
from gateway.store.spool import waiting_bytes
from gateway.turns import take_turn

from .database import _DatabaseDown, _DatabaseWrites
from .disk import _DiskFallback
from .replay import _SpoolReplay

log = logging.getLogger("gateway.logs")

_YIELD_EVERY = 64  # rows normalized between yields (~0.5 ms of CPU): a batch must not stall a worker's requests
# Behind by more than two batches, the writer takes up to this many batches' rows at once. Under gevent it runs
# between the requests of a busy worker, and each yield or database round trip waits a turn behind all of them
# (~20 ms at 64 requests in flight): at 200 rows a batch it fell behind a cache-hit peak (4,400 req/s here)
# and its queue filled, sending every further row to the spool file, one fsync each.
_CATCH_UP = 5


class LogWriter(_DatabaseWrites, _SpoolReplay, _DiskFallback):
    """Writes gateway_logs rows in the background; see the package docstring for the guarantees.

    `engine` may be replaced at any time: the next batch or probe uses the new one. The thread starts
    with the first `enqueue` (or `start()`), in the process that uses the writer, never before a fork.
    """

    def __init__(self, engine, spool_dir, batch_size=200, flush_interval=0.5, max_queue=10000,
                 probe_seconds=2.0):
        self.engine = engine
        self.spool_dir = os.path.abspath(spool_dir)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.probe_seconds = probe_seconds  # while the database is down, one cheap query this often
        # Counters, in rows.
        self.queued = 0      # accepted by enqueue
        self.written = 0     # inserted from the queue
        self.spooled = 0     # appended to a spool file
        self.replayed = 0    # inserted from spool files
        self.skipped = 0     # request_id already stored, so not inserted again (replays after a crash)
        self.rejected = 0    # refused by the database as invalid: kept in a rejected-*.jsonl file
        self.dropped = 0     # lost: the database and the disk both failed (each such row is logged)
        self._count_lock = threading.Lock()
        self._items = collections.deque()  # rows, and flush markers (threading.Event)
        self._depth = 0
        # Re-entrant: enqueue's threaded path wakes the writer while it holds it. And for gevent: a Condition asks
        # its lock whether the caller holds it (on every notify and wait) by trying to take it without blocking,
        # unless the lock can say so itself, as RLock can; gevent's plain lock, tried while held, yields to the
        # event loop. The holder slept with the lock held, every request that came to wake the writer meanwhile
        # queued behind it, and each slept again in its turn (a lock convoy: at c=32 on one worker, enqueue p99
        # 181 ms, slowest 588 ms).
        self._cond = threading.Condition(threading.RLock())
        self._idle = False       # the writer waits for a first row (not for a batch to fill or its interval)
        self._waiting = False    # the writer waits for its batch to fill, or its interval to pass
        self._greenlets = False  # the writer is a greenlet (gevent has patched threading): see enqueue
        self._thread = None
        self._stopping = False
        self._stopped = False
        self._inflight = []
        self._down = True        # unknown until the first probe, which runs at once
        self._next_probe = 0.0
        self._next_scan = 0.0
        self._backoff_until = 0.0
        self._claims = []
        self._spool = None
        self._tag = None
        self._rejected_path = None
        self._files_lock = threading.Lock()

    # --- the request path ---------------------------------------------------------------------

    def enqueue(self, row):
        """Queue one row (a dict, keys: gateway_logs column names), which the writer then owns: the caller must
        not change it afterwards (the writer normalizes it in place). O(1); never blocks, never raises."""
        try:
            if type(row) is not dict:
                raise TypeError(f"a request log row is a dict, not {type(row).__name__}")
            if self._greenlets and self._thread is not None and self._depth < self.max_queue and not self._stopping:
                # Under gevent the writer is a greenlet of this thread, and no greenlet runs until this one blocks:
                # these steps are as atomic as under the lock, which cost every request ~2% of a worker's CPU
                # (py-spy), to take and to see whether the writer waits.
                self.queued += 1
                self._items.append(row)
                self._depth += 1
                if self._wakes_writer():
                    self._wake()
                return
            with self._cond:
                self.queued += 1
                if self._thread is None and not self._stopped:
                    self._start_locked()
                if self._depth < self.max_queue and not self._stopping:
                    self._items.append(row)
                    self._depth += 1
                    if self._wakes_writer():
                        self._wake()
                    return
            # Queue full (the database is slow or down) or the writer is stopping: straight to disk.
            self._to_spool([row])
        except Exception:  # noqa: BLE001 - logging must never break a request
            self._count("dropped", 1)
            log.exception("request log: could not queue a row: %r", row)

    def _wakes_writer(self):
        """Whether a row just queued should wake the writer: only a waiting writer, and only for a first row or a
        full batch, not for every row (it would take the row and go back to waiting out its interval: a
        greenlet switch per request)."""
        return self._idle or (self._waiting and self._depth + len(self._inflight) >= self.batch_size)

    def _wake(self):
        """Wake the waiting writer, once: the rows queued before it runs need not wake it again."""
        self._idle = self._waiting = False
        with self._cond:
            self._cond.notify()

    # --- control and metrics ------------------------------------------------------------------

    def start(self):
        with self._cond:
            if self._thread is None and not self._stopped:
                self._start_locked()

    def _start_locked(self):
        self._greenlets = gevent_patched("threading")
        self._files()
        self._thread = threading.Thread(target=self._run, name="gateway-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.stop, 5)  # a safety net; the app should call stop() on worker exit

    def flush(self, timeout=10):
        """Block until every row enqueued before this call is in the database or a spool file.
        Returns False on timeout."""
        marker = threading.Event()
        with self._cond:
            if self._stopped or self._stopping or self._thread is None:
                return True  # enqueue starts the thread, so no thread means nothing queued
            self._items.append(marker)
            self._cond.notify()
        return marker.wait(timeout)

    def stop(self, timeout=10):
        """Write out what is queued (database, else spool), stop the thread, release the spool files.
        Returns False if the thread did not finish in time; what it held is spooled anyway."""
        with self._cond:
            if self._stopped:
                return True
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        finished = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            finished = not thread.is_alive()
        if not finished:
            # Stuck, e.g. an insert hanging on a dead connection. Spool everything it still holds; if
            # that insert commits after all, the replay skips those request_ids.
            rows, markers = self._take_everything()
            self._to_spool(rows)
            for marker in markers:
                marker.set()
            log.error("request log writer did not stop within %ss; %d rows spooled", timeout, len(rows))
        with self._cond:
            self._stopped = True
        return finished

    def queue_depth(self):
        """Rows in memory: queued, or taken by the thread and not yet committed or spooled."""
        return self._depth + len(self._inflight)

    def spool_bytes(self):
        """Bytes waiting for replay in the spool directory (every process's spool and claimed files)."""
        return waiting_bytes(self.spool_dir)

    def _count(self, name, n):
        if n:
            with self._count_lock:
                setattr(self, name, getattr(self, name) + n)

    # --- the writer thread --------------------------------------------------------------------

    def _run(self):
        try:
            while True:
                self._maintain()
                rows, markers, last = self._take()
                if rows:
                    self._store(rows)
                for marker in markers:
                    marker.set()
                if last:
                    break
        except BaseException:
            log.exception("request log writer crashed; spooling what is queued")
            with self._cond:
                self._stopping = True
            rows, markers = self._take_everything()
            self._to_spool(rows)
            for marker in markers:
                marker.set()
            raise
        finally:
            self._release_files()

    def _take_everything(self):
        with self._cond:
            rows = list(self._inflight) + [i for i in self._items if isinstance(i, dict)]
            markers = [i for i in self._items if not isinstance(i, dict)]
            self._items.clear()
            self._depth = 0
            self._inflight = []
        return rows, markers

    def _take(self):
        """Wait for rows; return (up to batch_size rows, flush markers reached, whether to exit).

        Returns early with nothing when maintenance (probe, replay) is due.
        """
        rows, markers = [], []
        with self._cond:
            self._inflight = rows  # counted in queue_depth() and saved by stop() from here on
            deadline = None
            limit = self.batch_size * (_CATCH_UP if self._depth >= 2 * self.batch_size else 1)
            while len(rows) < limit:
                now = time.monotonic()
                if self._items and (self._stopping or now >= self._backoff_until):
                    item = self._items.popleft()
                    if isinstance(item, dict):
                        rows.append(item)
                        self._depth -= 1
                        continue
                    markers.append(item)
                    break  # write what came before the marker, then signal it
                if self._stopping:
                    break
                if rows:
                    deadline = deadline or now + self.flush_interval
                    if now >= deadline:
                        break
                    self._waiting = True
                    try:
                        self._cond.wait(deadline - now)
                    finally:
                        self._waiting = False
                elif now < self._backoff_until:
                    self._cond.wait(self._backoff_until - now)
                else:
                    self._idle = True
                    try:
                        self._cond.wait(self._idle_wait())
                    finally:
                        self._idle = False
                    if not self._items:
                        break
            last = self._stopping and not self._items
        return rows, markers, last

    def _idle_wait(self):
        if self._claims and not self._down:
            return 0  # a replay is under way: go on with it
        return min(1.0, self.probe_seconds)

    def _store(self, rows):
        """Rows from the queue: into the database, else into the spool."""
        good, bad = [], []
        for i, row in enumerate(rows, 1):
            try:
                good.append(normalize(row))
            except (ValueError, TypeError) as e:
                bad.append((row, e))
            if i % _YIELD_EVERY == 0:
                take_turn()  # under gevent this thread is a greenlet: let requests run between slices
        self._reject(bad)
        if good:
            if self._down and time.monotonic() < self._next_probe:
                self._to_spool(good)  # known to be down: do not wait on a connection per batch
            else:
                try:
                    inserted = self._commit(good, new=True)
                except _DatabaseDown as e:
                    self._mark_down(e.__cause__)
                    self._to_spool(good)
                else:
                    self._count("written", inserted)
                    self._count("skipped", len(good) - inserted)
        self._inflight = []
