import datetime as dt
import glob
import json
import math
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from gateway.extensions import make_engine
from gateway.store.logs import _MAX_ROWS_PER_STATEMENT, normalize
from gateway.store.logwriter import LogWriter
from gateway.store.models import gateway_logs
from gateway.store.spool import decode, encode
from tests.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T = gateway_logs


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, sqlite_url):
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def dead_engine():
    """PostgreSQL down: nothing listens on this port, so every connect is refused."""
    engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/gateway")
    yield engine
    engine.dispose()


@pytest.fixture
def spool_dir(tmp_path):
    return str(tmp_path / "spool")


@pytest.fixture
def make_writer():
    made = []

    def factory(engine, spool_dir, **kwargs):
        kwargs.setdefault("probe_seconds", 0.1)
        writer = LogWriter(engine, spool_dir, **kwargs)
        made.append(writer)
        return writer
    yield factory
    for writer in made:
        writer.stop(timeout=5)
        assert writer.dropped == 0


def new_id():
    return "req_" + secrets.token_hex(12)


def log_row(request_id=None, **extra):
    row = {"request_id": request_id or new_id(), "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini",
           "provider": "openai", "status_code": 200, "prompt_tokens": 10, "completion_tokens": 5,
           "total_tokens": 15, "cost_usd": Decimal("0.00000450"), "latency_ms": 120,
           "created_at": dt.datetime.now(dt.timezone.utc)}
    row.update(extra)
    return row


def stored(engine, ids):
    """{request_id: number of rows} for the given ids."""
    counts = {}
    ids = list(ids)
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            counts.update(conn.execute(select(T.c.request_id, func.count()).where(T.c.request_id.in_(chunk))
                                       .group_by(T.c.request_id)).all())
    return counts


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def all_stored_once(engine, ids):
    return stored(engine, ids) == {i: 1 for i in ids}


def spool_files(spool_dir, prefix=("spool-", "claimed-")):
    return sorted(p for p in glob.glob(os.path.join(spool_dir, "*.jsonl"))
                  if os.path.basename(p).startswith(prefix))


class InsertCounter:
    def __init__(self, engine):
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT"):
            self.count += 1


class Gate:
    """Holds every INSERT on an engine until opened: a database that hangs."""

    def __init__(self, engine):
        self.entered = threading.Event()
        self.opened = threading.Event()
        event.listen(engine, "before_cursor_execute", self._hold)

    def _hold(self, conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT"):
            self.entered.set()
            assert self.opened.wait(30)


# --- batching ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, most_statements", [
    (450, 3 * math.ceil(200 / _MAX_ROWS_PER_STATEMENT)),  # 3 batches, not 450 rows one by one
    # Under gevent each batch waits its turns behind a busy worker's requests: 200 rows a batch fell behind a
    # cache-hit peak. Behind by more than two batches, the writer takes up to five at once.
    (2000, 4),  # 200 rows a batch would be 10 statements
], ids=["batches", "backlog"])
def test_rows_are_inserted_in_batches_and_a_backlog_in_larger_ones(engine, spool_dir, make_writer, rows,
                                                                   most_statements):
    inserts = InsertCounter(engine)
    writer = make_writer(engine, spool_dir, batch_size=200, flush_interval=0.5)
    ids = [new_id() for _ in range(rows)]
    for request_id in ids:
        writer.enqueue(log_row(request_id))
    assert writer.flush(20)
    assert all_stored_once(engine, ids)
    assert inserts.count <= most_statements
    assert (writer.queued, writer.written, writer.spooled, writer.dropped) == (rows, rows, 0, 0)
    assert writer.queue_depth() == 0


def test_live_rows_go_as_a_plain_insert_and_spooled_ones_skipping_duplicates(request, spool_dir, make_writer):
    """A live batch is new to the database (PostgreSQL spares ON CONFLICT's work for it); a spool file may hold
    rows a lost acknowledgement left stored, so its replay skips them."""
    engine = make_engine(request.getfixturevalue("pg_url"))
    request.addfinalizer(engine.dispose)
    seen = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, statement, *_: statement.startswith("INSERT") and
                 seen.append("ON CONFLICT" in statement))
    ids = [new_id() for _ in range(30)]
    crash_a_writer(spool_dir, ids)
    writer = make_writer(engine, spool_dir, batch_size=50)
    writer.start()
    wait_for(lambda: writer.replayed == 30, what="the replay")
    live = [new_id() for _ in range(20)]
    for request_id in live:
        writer.enqueue(log_row(request_id))
    assert writer.flush(10)
    assert all_stored_once(engine, ids + live) and writer.written == 20
    assert seen == [True, False]


def test_a_lone_row_is_written_after_flush_interval(engine, spool_dir, make_writer):
    writer = make_writer(engine, spool_dir, batch_size=200, flush_interval=0.3)
    writer.enqueue(log_row())
    assert writer.flush(10)  # the writer is up and has found the database
    request_id = new_id()
    start = time.monotonic()
    writer.enqueue(log_row(request_id))
    wait_for(lambda: stored(engine, [request_id]), timeout=5, what="the row")
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 1.5
    assert writer.written == 2


def test_enqueue_never_raises(engine, spool_dir, make_writer):
    writer = make_writer(engine, spool_dir)
    writer.enqueue(None)
    writer.enqueue("not a row")
    assert writer.dropped == 2
    writer.dropped = 0  # those were the caller's bug; the fixture checks nothing else was lost


def test_rows_the_database_refuses_are_set_aside_not_retried_forever(engine, spool_dir, make_writer):
    writer = make_writer(engine, spool_dir)
    good = [new_id() for _ in range(3)]
    for request_id in good[:2]:
        writer.enqueue(log_row(request_id))
    writer.enqueue(log_row(new_id(), endpoint=None))        # NOT NULL column missing
    writer.enqueue(log_row(new_id(), no_such_column=1))     # not a gateway_logs column
    # Beyond what the columns hold (an upstream's usage of 1e300 tokens): on SQLite the insert raised
    # OverflowError, taken for the database being down, and every later row waited in the spool for ever.
    writer.enqueue(log_row(new_id(), completion_tokens=1e300))
    writer.enqueue(log_row(new_id(), prompt_tokens=2 ** 31))
    writer.enqueue(log_row(new_id(), api_key_id=2 ** 63))
    writer.enqueue(log_row(good[2], error_message="nul\x00 and lone \ud800 surrogate",
                           model="m" * 300, attempts=[{"provider": "openai", "reason": "timeout"}]))
    assert writer.flush(10)
    assert all_stored_once(engine, good)
    assert (writer.written, writer.rejected, writer.dropped, writer.spooled) == (3, 5, 0, 0)
    rejected = glob.glob(os.path.join(spool_dir, "rejected-*.jsonl"))
    assert len(rejected) == 1
    with open(rejected[0]) as f:
        assert len(f.readlines()) == 5
    with engine.connect() as conn:
        row = conn.execute(select(T).where(T.c.request_id == good[2])).one()
    assert row.error_message == "nul\ufffd and lone ? surrogate"
    assert row.model == "m" * 200
    assert json.loads(row.attempts) == [{"provider": "openai", "reason": "timeout"}]


# --- the database down ------------------------------------------------------------------------

def test_rows_are_spooled_while_the_database_is_down_and_replayed_once(engine, dead_engine, spool_dir,
                                                                       make_writer):
    writer = make_writer(engine, spool_dir, flush_interval=0.05)
    before = [new_id() for _ in range(10)]
    for request_id in before:
        writer.enqueue(log_row(request_id))
    assert writer.flush(10)
    assert writer.written == 10

    writer.engine = dead_engine
    during = [new_id() for _ in range(250)]
    for request_id in during:
        writer.enqueue(log_row(request_id))
    assert writer.flush(10)
    assert (writer.written, writer.spooled, writer.dropped) == (10, 250, 0)
    assert not stored(engine, during)
    files = spool_files(spool_dir)
    assert len(files) == 1
    with open(files[0]) as f:
        assert {json.loads(line)["request_id"] for line in f} == set(during)
    assert writer.spool_bytes() == os.path.getsize(files[0])

    writer.engine = engine
    wait_for(lambda: writer.replayed == 250 and not spool_files(spool_dir), what="the replay")
    assert all_stored_once(engine, before + during)
    assert writer.spool_bytes() == 0

    after = [new_id() for _ in range(5)]
    for request_id in after:
        writer.enqueue(log_row(request_id))
    assert writer.flush(10)
    assert all_stored_once(engine, before + during + after)
    assert (writer.written, writer.spooled, writer.replayed, writer.skipped, writer.dropped) == (15, 250, 250, 0, 0)


def test_a_full_queue_spools_instead_of_dropping(engine, spool_dir, make_writer):
    gate = Gate(engine)
    writer = make_writer(engine, spool_dir, max_queue=5, flush_interval=0.01)
    first = new_id()
    writer.enqueue(log_row(first))
    assert gate.entered.wait(10)  # the writer is now stuck inside its insert
    rest = [new_id() for _ in range(20)]
    for request_id in rest:
        writer.enqueue(log_row(request_id))
    assert writer.queue_depth() == 6  # 5 queued, 1 in the hung insert
    assert writer.spooled == 15
    gate.opened.set()
    wait_for(lambda: all_stored_once(engine, [first] + rest), what="every row")
    assert writer.flush(10)
    assert (writer.written, writer.replayed, writer.dropped) == (6, 15, 0)


def test_stop_writes_what_is_queued(engine, spool_dir, make_writer):
    writer = make_writer(engine, spool_dir, flush_interval=30)
    ids = [new_id() for _ in range(50)]
    for request_id in ids:
        writer.enqueue(log_row(request_id))
    assert writer.stop(timeout=10)
    assert all_stored_once(engine, ids)
    late = new_id()
    writer.enqueue(log_row(late))  # after stop: spooled, for the next writer
    assert writer.spooled == 1


def test_stop_with_the_database_down_spools_for_the_next_writer(engine, dead_engine, spool_dir, make_writer):
    writer = make_writer(dead_engine, spool_dir, flush_interval=30)
    ids = [new_id() for _ in range(30)]
    for request_id in ids:
        writer.enqueue(log_row(request_id))
    assert writer.stop(timeout=10)
    assert writer.spooled == 30
    assert len(spool_files(spool_dir)) == 1

    successor = make_writer(engine, spool_dir)
    successor.start()
    wait_for(lambda: successor.replayed == 30 and not spool_files(spool_dir), what="the replay")
    assert all_stored_once(engine, ids)


def test_a_stuck_writer_is_stopped_without_losing_or_doubling_rows(engine, spool_dir, make_writer):
    gate = Gate(engine)
    writer = make_writer(engine, spool_dir, flush_interval=0.01)
    ids = [new_id() for _ in range(5)]
    for request_id in ids:
        writer.enqueue(log_row(request_id))
    assert gate.entered.wait(10)
    assert writer.stop(timeout=0.5) is False  # the insert hangs: stop spools what the thread held
    assert writer.spooled == 5
    gate.opened.set()  # ...and then the hung insert commits after all
    wait_for(lambda: all_stored_once(engine, ids), what="the late commit")

    successor = make_writer(engine, spool_dir)
    successor.start()
    wait_for(lambda: successor.skipped == 5, what="the replay")
    assert successor.replayed == 0
    assert all_stored_once(engine, ids)


# --- files left by dead processes ---------------------------------------------------------------

CRASHING_WRITER = textwrap.dedent("""
    import os, sys, json, datetime as dt
    from decimal import Decimal
    from gateway.extensions import make_engine
    from gateway.store.logwriter import LogWriter
    spool_dir, port, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    writer = LogWriter(make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/gateway"), spool_dir,
                       flush_interval=0.01)
    for i in ids:
        writer.enqueue({"request_id": i, "endpoint": "/v1/chat/completions", "status_code": 200,
                        "cost_usd": Decimal("0.00012345"), "cache_hit": True,
                        "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)})
    assert writer.flush(10) and writer.spooled == len(ids), (writer.spooled, len(ids))
    os._exit(17)  # no stop(), no cleanup: a worker killed mid-flight
""")


def crash_a_writer(spool_dir, ids):
    result = subprocess.run([sys.executable, "-c", CRASHING_WRITER, spool_dir, str(free_port()), json.dumps(ids)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 17, result.stderr


def test_a_dead_process_spool_is_replayed_exactly_once(engine, spool_dir, make_writer):
    ids = [new_id() for _ in range(120)]
    crash_a_writer(spool_dir, ids)
    [left] = spool_files(spool_dir)
    copy = open(left, "rb").read()

    writer = make_writer(engine, spool_dir, batch_size=50)
    writer.start()
    wait_for(lambda: writer.replayed == 120 and not spool_files(spool_dir), what="the replay")
    assert all_stored_once(engine, ids)
    with engine.connect() as conn:
        row = conn.execute(select(T).where(T.c.request_id == ids[0])).one()
    assert row.cost_usd == Decimal("0.00012345") and row.cache_hit is True
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.timezone.utc)
    assert created == dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)

    # The same file replayed again (say the first replayer died before deleting it): nothing doubles.
    with open(os.path.join(spool_dir, "spool-99999-again.jsonl"), "wb") as f:
        f.write(copy)
    again = make_writer(engine, spool_dir)
    again.start()
    wait_for(lambda: again.skipped == 120 and not spool_files(spool_dir), what="the second replay")
    assert again.replayed == 0
    assert all_stored_once(engine, ids)


def test_a_file_claimed_by_a_replayer_that_died_is_finished_by_the_next(engine, spool_dir, make_writer):
    ids = [new_id() for _ in range(40)]
    os.makedirs(spool_dir)
    writer = make_writer(engine, spool_dir)
    for request_id in ids[:15]:  # the dead replayer got this far
        writer.enqueue(log_row(request_id))
    assert writer.flush(10)
    with open(os.path.join(spool_dir, "claimed-4242-abc123.jsonl"), "wb") as f:
        f.writelines(encode(log_row(request_id)) for request_id in ids)
        f.write(b'{"request_id": "req_torn", "endpo')  # killed mid-write
    successor = make_writer(engine, spool_dir)
    successor.start()
    wait_for(lambda: not spool_files(spool_dir), what="the replay")
    assert (successor.replayed, successor.skipped, successor.rejected) == (25, 15, 1)
    assert all_stored_once(engine, ids)
    [rejected] = glob.glob(os.path.join(spool_dir, "rejected-*.jsonl"))
    assert open(rejected, "rb").read() == b'{"request_id": "req_torn", "endpo\n'


def test_two_writers_racing_for_an_abandoned_file_replay_it_once(engine, spool_dir, make_writer):
    ids = [new_id() for _ in range(300)]
    os.makedirs(spool_dir)
    for n in range(3):
        with open(os.path.join(spool_dir, f"spool-1000{n}-dead.jsonl"), "wb") as f:
            f.writelines(encode(log_row(request_id)) for request_id in ids[n * 100:(n + 1) * 100])
    writers = [make_writer(engine, spool_dir, batch_size=20) for _ in range(4)]
    for writer in writers:
        writer.start()
    wait_for(lambda: sum(w.replayed for w in writers) == 300, what="the replays")
    assert sum(w.skipped for w in writers) == 0  # each file was replayed by one writer only
    assert all_stored_once(engine, ids)


def test_a_live_writers_spool_is_not_taken_by_another(engine, dead_engine, spool_dir, make_writer):
    down = make_writer(dead_engine, spool_dir)
    ids = [new_id() for _ in range(10)]
    for request_id in ids:
        down.enqueue(log_row(request_id))
    assert down.flush(10) and down.spooled == 10

    other = make_writer(engine, spool_dir)
    other.start()
    time.sleep(0.5)
    assert other.replayed == 0 and not stored(engine, ids)  # still its owner's: it is alive

    down.engine = engine
    wait_for(lambda: down.replayed == 10, what="the owner's replay")
    assert all_stored_once(engine, ids)


# --- the spool format -------------------------------------------------------------------------

def test_decimals_datetimes_and_bools_survive_the_spool_exactly():
    paris = dt.timezone(dt.timedelta(hours=1))
    row = {"request_id": "req_x", "endpoint": "/v1/chat/completions", "status_code": 200,
           "cost_usd": Decimal("0.00012345"), "saved_usd": Decimal("12345.1"),
           "created_at": dt.datetime(2026, 11, 26, 10, 30, 0, 123456, tzinfo=paris),
           "cache_hit": True, "failover_used": False, "stream": True, "latency_ms": 987,
           "attempts": json.dumps([{"provider": "openai", "status": 503}])}
    back = decode(encode(row))
    assert back == normalize(row)
    assert back["cost_usd"] == Decimal("0.00012345") and isinstance(back["cost_usd"], Decimal)
    assert str(back["cost_usd"]) == "0.00012345" and str(back["saved_usd"]) == "12345.10000000"
    assert back["created_at"] == row["created_at"]
    assert back["created_at"].utcoffset() == dt.timedelta(0)
    assert back["created_at"].microsecond == 123456
    assert back["cache_hit"] is True and back["failover_used"] is False and back["stream"] is True
    assert back["latency_ms"] == 987 and back["attempts"] == row["attempts"]


def test_a_spooled_row_reaches_the_database_unchanged(engine, dead_engine, spool_dir, make_writer):
    created = dt.datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    row = log_row(cost_usd=Decimal("1234.56789012"), saved_usd=Decimal("0.00000001"), created_at=created,
                  cache_hit=True, failover_used=True, stream=False, api_key_id=2 ** 40)
    writer = make_writer(dead_engine, spool_dir)
    writer.enqueue(row)
    assert writer.flush(10) and writer.spooled == 1
    writer.engine = engine
    wait_for(lambda: writer.replayed == 1, what="the replay")
    with engine.connect() as conn:
        back = conn.execute(select(T).where(T.c.request_id == row["request_id"])).one()
    assert (back.cost_usd, back.saved_usd) == (Decimal("1234.56789012"), Decimal("0.00000001"))
    assert (back.created_at if back.created_at.tzinfo else back.created_at.replace(tzinfo=dt.timezone.utc)) == created
    assert (back.cache_hit, back.failover_used, back.stream, back.api_key_id) == (True, True, False, 2 ** 40)


def test_with_neither_database_nor_disk_rows_wait_in_memory(engine, dead_engine, tmp_path, make_writer, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    writer = make_writer(dead_engine, str(blocked / "spool"), probe_seconds=0.05)
    ids = [new_id() for _ in range(10)]
    for request_id in ids:
        writer.enqueue(log_row(request_id))
    wait_for(lambda: "cannot write the spool" in caplog.text, what="the writer to hold the rows")
    time.sleep(0.3)
    assert (writer.spooled, writer.dropped, writer.queue_depth()) == (0, 0, 10)

    writer.engine = engine
    wait_for(lambda: writer.written == 10, what="the held rows")
    assert all_stored_once(engine, ids)


# --- under gevent, as in production -------------------------------------------------------------

UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import json, sys, time, datetime as dt
    from decimal import Decimal
    import gevent
    from gateway.extensions import make_engine
    from gateway.store.logwriter import LogWriter
    url, spool_dir, port, prefix = sys.argv[1:5]
    good = make_engine(url)
    writer = LogWriter(good, spool_dir, flush_interval=0.05, probe_seconds=0.1)

    def requests(greenlet, n):
        for i in range(n):
            writer.enqueue({"request_id": f"{prefix}-{greenlet}-{i}", "endpoint": "/v1/chat/completions",
                            "status_code": 200, "cost_usd": Decimal("0.001"),
                            "created_at": dt.datetime.now(dt.timezone.utc)})
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(requests, g, 50) for g in range(20)])
    assert writer.flush(10)
    writer.engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/gateway")
    gevent.joinall([gevent.spawn(requests, g, 10) for g in range(20, 25)])
    assert writer.flush(10)
    writer.engine = good
    deadline = time.monotonic() + 10
    while writer.replayed < 50 and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert writer.stop(10)
    print(json.dumps({k: getattr(writer, k) for k in ("queued", "written", "spooled", "replayed", "dropped")}))
""")


def test_under_gevent_with_postgresql(request, tmp_path):
    url = request.getfixturevalue("pg_url")
    prefix = "req_gevent_" + secrets.token_hex(4)
    result = subprocess.run([sys.executable, "-c", UNDER_GEVENT, url, str(tmp_path / "spool"), str(free_port()),
                             prefix], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    counters = json.loads(result.stdout.strip().splitlines()[-1])
    assert counters == {"queued": 1050, "written": 1000, "spooled": 50, "replayed": 50, "dropped": 0}
    engine = make_engine(url)
    ids = [f"{prefix}-{g}-{i}" for g in range(20) for i in range(50)] + \
          [f"{prefix}-{g}-{i}" for g in range(20, 25) for i in range(10)]
    assert all_stored_once(engine, ids)
    engine.dispose()


# A request's enqueue must never give the event loop a turn: it would sleep holding the queue's lock while the
# other requests that came to wake the writer queued behind it (a lock convoy: enqueue p99 181 ms at c=32).
ENQUEUE_NEVER_YIELDS = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import json, sys, datetime as dt
    import gevent, greenlet
    from gateway.extensions import make_engine
    from gateway.store.logwriter import LogWriter
    url, spool_dir, prefix = sys.argv[1:4]
    writer = LogWriter(make_engine(url), spool_dir, batch_size=10, flush_interval=30, probe_seconds=0.1)
    switches = []
    def enqueue(n):
        me = gevent.getcurrent()
        greenlet.settrace(lambda event, args: switches.append(n) if args[0] is me else None)
        try:
            writer.enqueue({"request_id": f"{prefix}-{n}", "endpoint": "/v1/chat/completions", "status_code": 200,
                            "created_at": dt.datetime.now(dt.timezone.utc)})
        finally:
            greenlet.settrace(None)
    writer.start()
    gevent.sleep(0.05)  # the writer waits for a first row
    for n in range(35):
        enqueue(n)
        gevent.sleep(0.02)  # the writer runs: takes what is queued and waits for its batch to fill
    wakes = []
    notify = writer._cond.notify
    writer._cond.notify = lambda n=1: (wakes.append(n), notify(n))
    for n in range(35, 50):
        enqueue(n)  # back to back: the writer, woken once its batch is full, does not run in between
    burst_wakes = list(wakes)
    assert writer.flush(10)
    print(json.dumps({"switches": switches, "wakes": burst_wakes, "written": writer.written}))
""")


def test_under_gevent_enqueue_never_yields(sqlite_url, tmp_path):
    prefix = "req_yield_" + secrets.token_hex(4)
    result = subprocess.run([sys.executable, "-c", ENQUEUE_NEVER_YIELDS, sqlite_url, str(tmp_path / "spool"), prefix],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # Batches of 10 filled, each waking the writer, and a flush; a burst wakes it once, not once a row after.
    assert out == {"switches": [], "wakes": [1], "written": 50}


def test_under_gevent_clients_waiting_on_their_sockets_run_between_the_writers_slices(tmp_path):
    """The writer normalizes a batch in slices; between them a client whose request has come must be served,
    not only after the whole batch (a pause of sleep(0) let no client waiting on a socket run)."""
    code = textwrap.dedent(f"""
        from gevent import monkey; monkey.patch_all()
        import gevent, gevent.socket, json
        from gateway.extensions import make_engine
        from gateway.store.logwriter import writer as writer_module
        from tests.store.test_logwriter import log_row
        order, normalize = [], writer_module.normalize
        writer_module.normalize = lambda row: (order.append("row"), normalize(row))[1]
        writer = writer_module.LogWriter(make_engine("sqlite:///{tmp_path}/gw.db"), "{tmp_path}/spool")
        mine, theirs = gevent.socket.socketpair()

        def other_client():
            gevent.socket.wait_read(mine.fileno())
            order.append("other")
        waiting = gevent.spawn(other_client)
        gevent.sleep(0.05)
        theirs.sendall(b"GET / HTTP/1.1")
        writer._store([log_row() for _ in range(256)])
        waiting.join(5)
        print(json.dumps(order.index("other")))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    # At the loop's next poll: after the slice in hand and at most one more (the writer's timer and the socket
    # come due in the same poll), not after all four slices.
    assert json.loads(out.stdout) <= 2 * 64
