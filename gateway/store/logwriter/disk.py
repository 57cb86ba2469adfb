"""The disk side of LogWriter: rows the database cannot take go to this writer's spool file (held back in
memory while the disk fails), rows no retry can store go to a rejected file for a human."""
import logging
import os
import secrets
import threading
import time

from gateway.store.spool import _raw_line, _Spool, append_to, encode, rejected_path

log = logging.getLogger("gateway.logs")


class _DiskFallback:
    """LogWriter's disk methods (a mixin: the state is LogWriter's, see `writer.LogWriter.__init__`)."""

    def _files(self):
        """The spool, made on first use (in the process that writes, so the pid in its name is right).
        No disk access: a spool directory that cannot be written must not stop rows reaching the database."""
        with self._files_lock:
            if self._spool is None:
                self._tag = f"{os.getpid()}-{secrets.token_hex(3)}"
                self._spool = _Spool(self.spool_dir, self._tag)
            return self._spool

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
