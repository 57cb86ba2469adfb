"""The request-log spool: rows the database could not take yet, on local disk until they are replayed.
Its line format (`encode`, `decode`, `read_batch`), this writer's own file (`_Spool`), files claimed
from dead processes (`claim_abandoned`, `_Claim`), the rejected file, and durable appends (`_append`).

Spool files (all in `spool_dir`, JSON lines, one row per line, column names as keys):
- `spool-<pid>-<token>.jsonl`: a live writer's own file. It is created under a temporary name, locked
  with flock(LOCK_EX), then renamed into place, so it is never visible unlocked while its owner lives.
  The kernel drops the lock when the process dies, however it dies.
- `claimed-<pid>-<token>.jsonl`: a file being replayed. A writer claims a file by taking its lock
  (non-blocking: a held lock means a live owner) and renaming it to its own claimed name; rename is
  atomic, so of two workers racing for one abandoned file exactly one gets it. A claimed file whose
  claimer died (or stopped) is unlocked again, and the next writer claims and replays it (idempotently).
- `rejected-<pid>-<token>.jsonl`: rows the database refused (e.g. a NOT NULL column missing) or lines
  that could not be parsed. Never replayed automatically; rename one to `spool-manual.jsonl` after fixing
  it and any writer will replay it.
"""
import datetime as dt
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from decimal import Decimal

from gateway.store.logs import BadRow, normalize

log = logging.getLogger("gateway.logs")


def _jsonable(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def encode(row):
    """One spool line for a row. Decimals and datetimes are strings; `decode` turns them back by
    column type, so the round trip is exact. `row` is left as it was."""
    row = normalize(dict(row))
    return (json.dumps({k: _jsonable(v) for k, v in row.items()}, separators=(",", ":")) + "\n").encode()


def decode(line):
    """The row of one spool line. Raises ValueError (BadRow or JSONDecodeError) on a damaged line."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise BadRow("a spool line must be a JSON object")
    return normalize(data)


def _raw_line(row):
    """Best-effort text of a row that cannot be encoded normally, for the rejected file."""
    try:
        return (json.dumps(row, default=str, separators=(",", ":")) + "\n").encode()
    except Exception:  # noqa: BLE001 - last resort: keep something a human can read
        return (json.dumps({"unencodable_row": repr(row)}) + "\n").encode()


def read_batch(f, offset, limit):
    """Up to `limit` rows of spool file `f`, which is positioned at byte `offset`; returns (rows,
    [(unreadable line, its error)], the offset after the last line read). Blank lines are skipped; an
    unreadable line comes back newline-terminated, ready for the rejected file."""
    rows, bad_lines, end = [], [], offset
    while len(rows) < limit:
        line = f.readline()
        if not line:
            break
        end += len(line)
        if not line.strip():
            continue
        try:
            rows.append(decode(line))
        except ValueError as e:  # a torn last line after a crash, or a hand edit
            bad_lines.append((line if line.endswith(b"\n") else line + b"\n", e))
    return rows, bad_lines, end


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(fd, data):
    """Append and fsync; on failure cut the file back so no half line is left for the next append."""
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise


class _Claim:
    """A spool file this writer holds (lock via `fd`) and is replaying from `offset`."""

    def __init__(self, path, fd):
        self.path, self.fd, self.offset = path, fd, 0

    def release(self):
        os.close(self.fd)


class _Spool:
    """This writer's own append-only spool file, created on first use, locked while open."""

    def __init__(self, directory, tag):
        self.directory, self.tag = directory, tag
        self.path, self.fd = None, None
        self.lock = threading.Lock()

    def append(self, data):
        with self.lock:
            if self.fd is None:
                self._create()
            _append(self.fd, data)

    def _create(self):
        os.makedirs(self.directory, exist_ok=True)
        token = secrets.token_hex(6)
        tmp = os.path.join(self.directory, f".tmp-{self.tag}-{token}.jsonl")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: never contended
            path = os.path.join(self.directory, f"spool-{self.tag}-{token}.jsonl")
            os.rename(tmp, path)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self.path, self.fd = path, fd

    def detach(self):
        """Hand the current file over for replay (renamed to a claimed name, still locked); the next
        append starts a new file. None when there is nothing to hand over."""
        with self.lock:
            if self.fd is None:
                return None
            if os.fstat(self.fd).st_size == 0:
                return None
            claimed = os.path.join(self.directory, f"claimed-{self.tag}-{secrets.token_hex(6)}.jsonl")
            os.rename(self.path, claimed)
            claim = _Claim(claimed, self.fd)
            self.path, self.fd = None, None
        _fsync_dir(self.directory)
        return claim

    def close(self):
        """Close (deleting the file if it is empty). A non-empty file is left, unlocked, for the next
        writer to replay."""
        with self.lock:
            if self.fd is None:
                return
            if os.fstat(self.fd).st_size == 0:
                os.unlink(self.path)
            os.close(self.fd)
            self.path, self.fd = None, None


def claim_abandoned(directory, tag):
    """Claim every spool or claimed file in `directory` whose owner is gone; returns the claims."""
    claims = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return claims
    for name in names:
        if not name.endswith(".jsonl"):
            continue
        path = os.path.join(directory, name)
        if name.startswith(".tmp-"):
            _remove_if_abandoned(path)  # a writer died between create and rename: the file is empty
            continue
        if not name.startswith(("spool-", "claimed-")):
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        except OSError:
            log.warning("request log: cannot open spool file %s", path, exc_info=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # We hold the lock: the path cannot move under us unless it no longer names our file.
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
            claimed = os.path.join(directory, f"claimed-{tag}-{secrets.token_hex(6)}.jsonl")
            os.rename(path, claimed)
        except (BlockingIOError, FileNotFoundError):  # alive, or claimed by someone else meanwhile
            os.close(fd)
            continue
        except OSError:
            os.close(fd)
            log.warning("request log: cannot claim spool file %s", path, exc_info=True)
            continue
        claims.append(_Claim(claimed, fd))
    if claims:
        try:
            _fsync_dir(directory)
        except OSError:
            pass  # the renames happened; only their durability across a power cut is in question
    return claims


def _remove_if_abandoned(path):
    """Remove a temporary file left by a writer that died between creating and renaming it (so empty).
    A young one may be a live writer's, about to be locked and renamed: leave it."""
    try:
        if time.time() - os.stat(path).st_mtime < 60:
            return
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_size == 0:
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def rejected_path(directory, tag):
    """The file for rows of writer `tag` that the database refused (see the module docstring)."""
    return os.path.join(directory, f"rejected-{tag}.jsonl")


def append_to(path, data):
    """Append to the file at `path`, creating it if need be, and fsync (see `_append`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _append(fd, data)
    finally:
        os.close(fd)


def waiting_bytes(directory):
    """Bytes waiting for replay in `directory` (every process's spool and claimed files)."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(("spool-", "claimed-")) and entry.name.endswith(".jsonl"):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        pass
    except OSError:
        pass  # no spool directory (yet): nothing waits
    return total
