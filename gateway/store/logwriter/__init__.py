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

Here, one module per part of the writer: `writer` (LogWriter: the queue, flush and stop, the thread that
takes batches and sends each to the database, else the spool), `database` (a batch committed with the
rows the database refuses set aside; the database marked down and probed back up), `replay` (spool
files claimed and replayed between batches) and `disk` (the writer's own spool file, holding rows back
when it cannot be written, the rejected file). The last three are mixins of LogWriter: they share its
state, which `writer.LogWriter.__init__` declares.
"""
from .writer import LogWriter

__all__ = ["LogWriter"]
