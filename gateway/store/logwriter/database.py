"""The database side of LogWriter: a batch committed idempotently, with the rows the database refuses as
invalid set aside one by one; the database marked down when it does not answer, and probed back up."""
import logging
import time

from sqlalchemy import text

from gateway.extensions import time_limit
from gateway.store.logs import _is_bad_data, insert_ignoring_duplicates

log = logging.getLogger("gateway.logs")

# A database that does not answer is down, however it fails to: an insert (milliseconds for a batch) or a probe
# not answered in this long is given up and its rows spooled (they are replayed idempotently, so one that
# committed after all is not written twice).
_WRITE_TIMEOUT = 10.0
_PROBE_TIMEOUT = 2.0


class _DatabaseDown(Exception):
    pass


class _DatabaseWrites:
    """LogWriter's database methods (a mixin: the state is LogWriter's, see `writer.LogWriter.__init__`)."""

    def _commit(self, rows, new=False):
        """Insert normalized rows, skipping stored request_ids; returns how many were inserted. Rows
        the database refuses are found one by one and set aside. Raises _DatabaseDown. `new`: a live batch,
        never offered to the database before (see `insert_ignoring_duplicates`)."""
        try:
            inserted = self._insert(rows, new)
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

    def _insert(self, rows, new=False):
        engine = self.engine
        with time_limit(engine, _WRITE_TIMEOUT):
            return insert_ignoring_duplicates(engine, rows, new)

    def _mark_down(self, exc):
        if not self._down:
            first_line = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else repr(exc)
            log.warning("request log: database unavailable (%s); spooling to %s", first_line, self.spool_dir)
        self._down = True
        self._next_probe = time.monotonic() + self.probe_seconds

    def _probe(self):
        """One cheap query on a database marked down: True, and marked up, if it answers in time."""
        engine = self.engine
        try:
            with time_limit(engine, _PROBE_TIMEOUT), engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - still down
            self._mark_down(e)
            return False
        self._down = False
        return True
