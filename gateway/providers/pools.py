"""Keep-alive pools to the upstreams: as large as a worker's concurrency while it is busy, shed once idle.

Every open stream holds one upstream connection, so a pool smaller than the concurrency would close and
reopen connections (a TLS handshake each, on a real provider) under steady load. But after a burst (1,000
streams held at once) the pool keeps every connection: ~30 KB of objects and buffers each, ~30 MB a worker,
for connections the provider will drop anyway. So a connection idle in its pool for `max_idle` seconds is
closed, as httpx (the OpenAI SDK's client) does after 5 s. The pool hands out the most recently returned
connection first, so under steady load the same working set stays warm and only the excess ages out.
"""
import contextlib
import time

from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool


class _IdleSince:
    """Stamps a connection with the time it went back into its pool."""

    def _put_conn(self, conn):
        if conn is not None:
            conn.gateway_idle_since = time.monotonic()
        super()._put_conn(conn)


class HTTPPool(_IdleSince, HTTPConnectionPool):
    pass


class HTTPSPool(_IdleSince, HTTPSConnectionPool):
    pass


class Adapter(HTTPAdapter):
    """requests' adapter with pools that know how long each connection has been idle."""
    pool_classes = {"http": HTTPPool, "https": HTTPSPool}

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self.pool_classes


def close_idle(session, max_idle, now=None):
    """Close the connections of `session` that sat in their pool for `max_idle` seconds or more.
    Returns how many were closed. Safe beside requests in flight: a connection is taken out of its pool
    (its slot left empty, as a fresh pool's are) before it is closed."""
    now = time.monotonic() if now is None else now
    stale = []
    for adapter in {id(a): a for a in session.adapters.values()}.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is None:
            continue
        for pool in _pools(manager):
            stale.extend(_take_stale(pool, now - max_idle))
    for conn in stale:
        conn.close()
    return len(stale)


def _pools(manager):
    container = manager.pools
    with container.lock:  # a snapshot without touching the pools' least-recently-used order
        return list(container._container.values())


def _take_stale(pool, before):
    queue = getattr(pool, "pool", None)
    if queue is None:  # a closed pool
        return []
    # queue.LifoQueue guards its list with a mutex; gevent's, which replaces it in a patched worker, has
    # none and needs none: nothing here gives the event loop a turn.
    with getattr(queue, "mutex", contextlib.nullcontext()):
        taken = []
        slots = queue.queue
        for i, conn in enumerate(slots):
            since = getattr(conn, "gateway_idle_since", None)
            if since is not None and since <= before:
                slots[i] = None
                taken.append(conn)
        return taken
