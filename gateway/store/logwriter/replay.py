"""Spool replay for LogWriter: between batches, claim the files dead processes abandoned and this writer's
own spool, and replay them in slices into a database that is up."""
import logging
import os
import time

from gateway.store.spool import _fsync_dir, claim_abandoned, read_batch

from .database import _DatabaseDown

log = logging.getLogger("gateway.logs")

_SCAN_SECONDS = 30.0  # how often a healthy writer looks for files abandoned by dead processes
_REPLAY_BATCHES_PER_ROUND = 10  # replay in slices so live rows are not held up behind a large file


class _SpoolReplay:
    """LogWriter's replay methods (a mixin: the state is LogWriter's, see `writer.LogWriter.__init__`)."""

    def _maintain(self):
        """Between batches: probe a database marked down; when it is up, claim files abandoned by dead
        processes and replay a slice of what is spooled."""
        if self._stopping:
            return
        now = time.monotonic()
        if self._down:
            if now < self._next_probe or not self._probe():
                return
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
