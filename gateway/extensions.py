"""The shared clients a worker holds: the database engine and Redis (or None: in-process fallback).

Created once per app by `init(settings)`; a gunicorn worker gets its own after fork because the app is
built lazily in the worker (see wsgi.py and gunicorn.conf.py).
"""
import contextlib
import logging
import os

from sqlalchemy import create_engine, event

from gateway.deadline import bounded, gevent_patched

log = logging.getLogger("gateway")

_CONNECT_TIMEOUT = 5  # seconds to a usable PostgreSQL connection
# A peer that vanishes (a network partition: packets dropped, nothing refused or reset) is otherwise never
# noticed on an established connection: a query sent and acknowledged waits for its reply forever, one not
# acknowledged is retransmitted for ~15 minutes. Keepalive probes start after 10 s of silence, every 5 s;
# TCP_USER_TIMEOUT (Linux; libpq >= 12) closes the connection once sent data or probes have gone unacknowledged
# for 30 s (with it set, Linux ignores keepalives_count). A healthy server acknowledges both at once, however
# long its query runs, so a long `gateway report` or migration is not cut short (a statement_timeout would be).
# They cannot tell a hung server whose kernel still acknowledges from a slow one: the request path bounds its
# calls in time (`time_limit`).
_TCP_SETTINGS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                 "tcp_user_timeout": 30_000}


class DatabaseTimeout(Exception):
    """The database did not answer a call within its time bound: a hung server, or a network that drops
    packets. An outage, like a refused connection."""


def _cooperative_psycopg():
    """Under gevent psycopg2 blocks the whole worker while it waits on PostgreSQL: make it yield."""
    if not gevent_patched("socket"):
        return False
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()
    return True


def make_engine(url):
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _record):
            # WAL lets the log writer insert while request threads read keys.
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return engine
    cooperative = _cooperative_psycopg()
    engine = create_engine(
        url,
        # A worker uses the database for its log writer's batches (and spool replays), a key's look-up now and
        # then, its keys' last-used times and readiness checks: 4 connections are kept, one each, so none is
        # opened on a request's path in the ordinary run; a burst opens more, closed after it. Each kept
        # connection is a PostgreSQL server process and holds libpq's buffers as large as the largest batch it
        # sent (libpq never shrinks them): 10 kept a worker cost ~5 MB of a worker's memory after the bench's
        # load, and 8 workers kept 80 of PostgreSQL's default 100 connections. Last in, first out: the writer
        # keeps taking the connection it just gave back, and the others stay small.
        pool_size=4,
        max_overflow=10,       # 14 at most
        pool_use_lifo=True,
        pool_recycle=300,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": _CONNECT_TIMEOUT, "application_name": "gateway", **_TCP_SETTINGS},
    )
    if cooperative:
        _bound_connect(engine)
    return engine


def _bound_connect(engine):
    """libpq enforces connect_timeout only in its blocking connect; psycogreen connects asynchronously, so
    under gevent a server that accepts and never answers held the connecting request forever. Enforced here,
    failing as libpq's own timeout does."""
    import psycopg2

    def expired():
        return psycopg2.OperationalError(f"connection to server timed out after {_CONNECT_TIMEOUT} s (no answer)")

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        with bounded(_CONNECT_TIMEOUT, expired):
            return dialect.connect(*cargs, **cparams)


def _interruptible(engine):
    """Whether a call on `engine` can be cut short: psycopg2 waiting through gevent (psycogreen)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg2":
        return False
    from psycopg2 import extensions
    return extensions.get_wait_callback() is not None


@contextlib.contextmanager
def time_limit(engine, seconds):
    """Raise DatabaseTimeout if the database calls on `engine` inside the block take more than `seconds`.

    For the calls a request or the log writer must not wait on indefinitely. A timeout interrupts psycopg2
    mid-protocol, so it closes that connection and SQLAlchemy invalidates it (an interrupt is not an
    ordinary error to it): the pool never hands the half-read connection out again. Only under gevent
    (gunicorn's workers, where waits yield): a blocking driver cannot be interrupted, and relies on the TCP
    settings above; SQLite runs in-process and is never bounded."""
    if not _interruptible(engine):
        yield
        return
    with bounded(seconds, lambda: DatabaseTimeout(f"no answer from the database within {seconds:g} s")):
        yield


def make_redis(url, max_connections=200):
    """A blocking pool: with more callers than connections a request waits briefly for one, where
    redis-py's default pool (100, then MaxConnectionsError) would make the limiter fail open."""
    if not url:
        return None
    import redis
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=0.25,                 # waiting for a free connection
        socket_timeout=0.25,          # a slow Redis must not hold a request
        socket_connect_timeout=0.25,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    return redis.Redis(connection_pool=pool)


def redis_command(client, *args):
    """One command on a connection from the client's pool, past the client's command path (retry wrapper,
    observability hooks, argument checks): that path cost ~0.1 ms of CPU per call here, about a third of the
    call, on requests that make one or two. Error replies raise as the client's do; the reply is returned raw.

    From redis-py's blocking pool (make_redis) the connection is taken off the pool's own queue: the pool's
    get_connection() also probes each connection with a non-blocking read, a system call per command, to
    catch one Redis closed while it sat idle. Here such a connection fails on use instead and the command is
    sent once more on a new one, as the client's own retry would: a Redis restart costs no command."""
    import redis
    pool = client.connection_pool
    if not isinstance(pool, redis.BlockingConnectionPool):
        conn = pool.get_connection()
        try:
            return _send(conn, args)
        finally:
            pool.release(conn)
    conn, reused = _checkout(pool)
    try:
        try:
            return _send(conn, args)
        except redis.ConnectionError:
            if not reused:
                raise
            return _send(conn, args)  # closed while idle (a restart): once more, on a new connection
    finally:
        pool.pool.put_nowait(conn)


def _send(conn, args):
    from redis.exceptions import ResponseError
    try:
        conn.send_command(*args)
        return conn.read_response()
    except ResponseError:
        raise  # a whole error reply (NOSCRIPT, OOM, ...): the connection is clean and stays
    except BaseException:
        conn.disconnect()  # a half-read reply must not reach the next caller; the next send reconnects
        raise


def _checkout(pool):
    """(connection, whether it was connected before) from a BlockingConnectionPool, waiting up to the
    pool's timeout as its get_connection() does."""
    import queue

    import redis
    pool._checkpid()
    try:
        conn = pool.pool.get(block=True, timeout=pool.timeout)
    except queue.Empty:
        raise redis.ConnectionError("No connection available.") from None
    if conn is None:  # a free slot: the pool makes its connections lazily
        try:
            conn = pool.make_connection()
        except BaseException:
            pool.pool.put_nowait(None)
            raise
    return conn, conn._sock is not None

