"""Request logs: queued by the request path, written in batches by one background thread, spooled to
local files whenever the database cannot take them, replayed when it can.

Why nothing is lost:
- `enqueue` only appends to an in-memory queue; when the queue is full the row is appended to this
  writer's spool file instead (fsync-ed before `enqueue` returns).
- If the spool cannot be written either (disk full), the thread keeps its batch queued and retries
  every `probe_seconds`; rows are counted as `dropped` (and logged in full at ERROR) only when the
  database, the disk and the queue's room are all gone.
- The thread takes up to `batch_size` rows (or what arrived within `flush_interval`) and inserts them in
  one statement, one transaction. If the insert fails because the database is unreachable, the same rows
  are appended to the spool file and fsync-ed. A row leaves memory only once it is committed or on disk.
- A spool file is deleted only after every row in it has been committed (or, for a row the database
  refuses as invalid, copied to a `rejected-*.jsonl` file for a human).
- `stop()` drains the queue the same way. Only a process killed before `stop()` loses what was still in
  memory (at most `max_queue` rows, usually one batch): call `stop()` on worker exit.

Why nothing is written twice: every insert, live or replayed, is "insert, skip rows whose request_id
already exists" (`ON CONFLICT (request_id) DO NOTHING`, on PostgreSQL and SQLite alike). So a batch whose
commit succeeded but whose acknowledgement was lost, then spooled and replayed, or a spool file replayed
twice after a crash mid-replay, leaves each request_id exactly once.

The rows and their idempotent insert are `gateway.store.logs`; the spool files, their format, names and
locks are `gateway.store.spool`.
"""
import atexit
import collections
import logging
import os
import secrets
import threading
import time

from sqlalchemy import text

from gateway.extensions import time_limit
from gateway.store.logs import _is_bad_data, insert_ignoring_duplicates, normalize
from gateway.store.spool import (_fsync_dir, _raw_line, _Spool, append_to, claim_abandoned, encode, read_batch,
                                 rejected_path, waiting_bytes)

log = logging.getLogger("gateway.logs")

_SCAN_SECONDS = 30.0  # how often a healthy writer looks for files abandoned by dead processes
_REPLAY_BATCHES_PER_ROUND = 10  # replay in slices so live rows are not held up behind a large file
_YIELD_EVERY = 32  # rows normalized between yields (~0.5 ms of CPU): a batch must not stall a worker's requests
# A database that does not answer is down, however it fails to: an insert (milliseconds for a batch) or a probe
# not answered in this long is given up and its rows spooled (they are replayed idempotently, so one that
# committed after all is not written twice).
_WRITE_TIMEOUT = 10.0
_PROBE_TIMEOUT = 2.0


class _DatabaseDown(Exception):
    pass


class LogWriter:
    """Writes gateway_logs rows in the background; see the module docstring for the guarantees.

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
        self._cond = threading.Condition()
        self._idle = False       # the writer waits for a first row (not for a batch to fill or its interval)
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
        """Queue one row (keys: gateway_logs column names). O(1); never blocks, never raises."""
        try:
            row = dict(row)
            with self._cond:
                self.queued += 1
                if self._thread is None and not self._stopped:
                    self._start_locked()
                if self._depth < self.max_queue and not self._stopping:
                    self._items.append(row)
                    self._depth += 1
                    # Wake the writer for a first row or a full batch only, not for every row (it would take
                    # the row and go back to waiting out its interval: a greenlet switch per request).
                    if self._idle or self._depth + len(self._inflight) >= self.batch_size:
                        self._cond.notify()
                    return
            # Queue full (the database is slow or down) or the writer is stopping: straight to disk.
            self._to_spool([row])
        except Exception:  # noqa: BLE001 - logging must never break a request
            self._count("dropped", 1)
            log.exception("request log: could not queue a row: %r", row)

    # --- control and metrics ------------------------------------------------------------------

    def start(self):
        with self._cond:
            if self._thread is None and not self._stopped:
                self._start_locked()

    def _start_locked(self):
        self._files()
        self._thread = threading.Thread(target=self._run, name="gateway-log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.stop, 5)  # a safety net; the app should call stop() on worker exit

    def _files(self):
        """The spool, made on first use (in the process that writes, so the pid in its name is right).
        No disk access: a spool directory that cannot be written must not stop rows reaching the database."""
        with self._files_lock:
            if self._spool is None:
                self._tag = f"{os.getpid()}-{secrets.token_hex(3)}"
                self._spool = _Spool(self.spool_dir, self._tag)
            return self._spool

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
            while len(rows) < self.batch_size:
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
                    self._cond.wait(deadline - now)
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
                time.sleep(0)  # under gevent this thread is a greenlet: let requests run between slices
        self._reject(bad)
        if good:
            if self._down and time.monotonic() < self._next_probe:
                self._to_spool(good)  # known to be down: do not wait on a connection per batch
            else:
                try:
                    inserted = self._commit(good)
                except _DatabaseDown as e:
                    self._mark_down(e.__cause__)
                    self._to_spool(good)
                else:
                    self._count("written", inserted)
                    self._count("skipped", len(good) - inserted)
        self._inflight = []

    def _commit(self, rows):
        """Insert normalized rows, skipping stored request_ids; returns how many were inserted. Rows
        the database refuses are found one by one and set aside. Raises _DatabaseDown."""
        try:
            inserted = self._insert(rows)
        except Exception as e:  # noqa: BLE001 - classified here
            if not _is_bad_data(e):
                raise _DatabaseDown() from e
        else:
            self._down = False
            return inserted
        inserted, bad = 0, []
        for row in rows:
            try:
                inserted += self._insert([row])
            except Exception as e:  # noqa: BLE001
                if not _is_bad_data(e):
                    raise _DatabaseDown() from e
                bad.append((row, e))
        self._down = False
        self._reject(bad)
        return inserted

    def _insert(self, rows):
        engine = self.engine
        with time_limit(engine, _WRITE_TIMEOUT):
            return insert_ignoring_duplicates(engine, rows)

    def _mark_down(self, exc):
        if not self._down:
            first_line = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else repr(exc)
            log.warning("request log: database unavailable (%s); spooling to %s", first_line, self.spool_dir)
        self._down = True
        self._next_probe = time.monotonic() + self.probe_seconds

    def _maintain(self):
        """Between batches: probe a database marked down; when it is up, claim files abandoned by dead
        processes and replay a slice of what is spooled."""
        if self._stopping:
            return
        now = time.monotonic()
        if self._down:
            if now < self._next_probe:
                return
            engine = self.engine
            try:
                with time_limit(engine, _PROBE_TIMEOUT), engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except Exception as e:  # noqa: BLE001 - still down
                self._mark_down(e)
                return
            self._down = False
        try:
            if now >= self._next_scan:
                self._next_scan = now + _SCAN_SECONDS
                self._claims.extend(claim_abandoned(self.spool_dir, self._tag))
            own = self._spool.detach()
            if own is not None:
                self._claims.append(own)
        except OSError:
            log.warning("request log: could not look for spool files in %s", self.spool_dir, exc_info=True)
        budget = _REPLAY_BATCHES_PER_ROUND
        while self._claims and budget > 0 and not self._down and time.monotonic() >= self._backoff_until:
            budget = self._replay(self._claims[0], budget)

    def _replay(self, claim, budget):
        """Replay up to `budget` batches of a claimed file from where it was left; returns the budget
        left. The file is deleted only when every row in it has been committed."""
        try:
            with open(claim.path, "rb") as f:
                f.seek(claim.offset)
                while True:
                    if budget == 0:
                        return 0  # the rest next round, after the live rows waiting meanwhile
                    rows, bad_lines, end = read_batch(f, claim.offset, self.batch_size)
                    if not rows and not bad_lines:
                        break
                    if rows:
                        inserted = self._commit(rows)
                        self._count("replayed", inserted)
                        self._count("skipped", len(rows) - inserted)
                    if bad_lines:
                        self._write_rejected(b"".join(line for line, _ in bad_lines))
                        self._count("rejected", len(bad_lines))
                        log.error("request log: %d unreadable line(s) of %s moved to %s (first: %s)",
                                  len(bad_lines), claim.path, self._rejected_path, bad_lines[0][1])
                    claim.offset = end
                    budget -= 1
            os.unlink(claim.path)
            _fsync_dir(self.spool_dir)
        except _DatabaseDown as e:
            self._mark_down(e.__cause__)
            return 0
        except OSError:
            log.warning("request log: could not replay %s; will retry", claim.path, exc_info=True)
            self._backoff_until = time.monotonic() + self.probe_seconds
            return 0
        claim.release()
        self._claims.remove(claim)
        return budget

    # --- disk -----------------------------------------------------------------------------------

    def _to_spool(self, rows):
        """Append rows to this writer's spool file, fsync-ed. Never raises."""
        if not rows:
            return
        lines, bad = [], []
        for row in rows:
            try:
                lines.append(encode(row))
            except (ValueError, TypeError) as e:
                bad.append((row, e))
        self._reject(bad)
        if not lines:
            return
        try:
            self._files().append(b"".join(lines))
        except OSError:
            if self._hold_back(rows):
                return
            self._count("dropped", len(lines))
            log.error("request log: %d rows LOST (database and spool both failed): %s", len(lines),
                      b"".join(lines).decode(), exc_info=True)
            return
        self._count("spooled", len(lines))

    def _hold_back(self, rows):
        """The spool cannot be written (disk full?): the writer thread keeps the rows queued and pauses,
        as long as the queue has room. The request path cannot wait, so it does not hold back."""
        if threading.current_thread() is not self._thread:
            return False
        with self._cond:
            if self._stopping or self._depth + len(rows) > self.max_queue:
                return False
            self._items.extendleft(reversed(rows))
            self._depth += len(rows)
            self._backoff_until = time.monotonic() + self.probe_seconds
        log.error("request log: cannot write the spool in %s; holding %d rows in memory",
                  self.spool_dir, len(rows), exc_info=True)
        return True

    def _reject(self, bad):
        """Rows no retry can store: keep them in a rejected file for a human, and say so."""
        if not bad:
            return
        lines = []
        for row, _ in bad:
            try:
                lines.append(encode(row))
            except (ValueError, TypeError):
                lines.append(_raw_line(row))
        try:
            self._write_rejected(b"".join(lines))
        except OSError:
            self._count("dropped", len(bad))
            log.error("request log: %d invalid rows LOST (could not write the rejected file): %s", len(bad),
                      b"".join(lines).decode(), exc_info=True)
            return
        self._count("rejected", len(bad))
        row, error = bad[0]
        log.error("request log: %d row(s) refused as invalid, kept in %s (first: request_id=%s: %s)",
                  len(bad), self._rejected_path, row.get("request_id") if isinstance(row, dict) else "?",
                  str(error).strip().splitlines()[0] if str(error).strip() else repr(error))

    def _write_rejected(self, data):
        self._files()
        with self._files_lock:
            if self._rejected_path is None:
                os.makedirs(self.spool_dir, exist_ok=True)
                self._rejected_path = rejected_path(self.spool_dir, self._tag)
            append_to(self._rejected_path, data)

    def _release_files(self):
        """On exit: close the own spool (a non-empty one is left for the next writer) and unlock
        the claims (their files stay, for the next writer)."""
        try:
            if self._spool is not None:
                self._spool.close()
        except OSError:
            log.warning("request log: could not close the spool file", exc_info=True)
        for claim in self._claims:
            claim.release()
        self._claims = []
