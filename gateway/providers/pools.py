"""Keep-alive pools to the upstreams: as large as a worker's concurrency while it is busy, shed once idle.

Every open stream holds one upstream connection, so a pool smaller than the concurrency would close and
reopen connections (a TLS handshake each, on a real provider) under steady load. But after a burst (1,000
streams held at once) the pool keeps every connection, for connections the provider will drop anyway: only
~3 KB of objects each, but made in the middle of the burst, each keeps ~35 KB of heap pages resident (~30 MB a
worker) until it is closed and the heap trimmed (gateway/memory.py). So a connection idle in its pool for
`max_idle` seconds is closed, as httpx (the OpenAI SDK's client) does after 5 s. The pool hands out the most
recently returned connection first, so under steady load the same working set stays warm and only the excess
ages out; and the newest few stay open however long they wait, so a quiet gateway's next call does not pay a
new handshake.
"""
import contextlib
import time

from requests import Response
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

from gateway.providers.connection import Connection, TLSConnection

KEEP_WARM = 4  # per pool: the most recently used connections, never closed for being idle
_POOLS_REMEMBERED = 256  # request URLs whose pool and target an adapter remembers (upstream URLs: a few per model)


class _IdleSince:
    """Stamps a connection with the time it went back into its pool."""

    def _put_conn(self, conn):
        if conn is not None:
            conn.gateway_idle_since = time.monotonic()
        super()._put_conn(conn)


class HTTPPool(_IdleSince, HTTPConnectionPool):
    ConnectionCls = Connection


class HTTPSPool(_IdleSince, HTTPSConnectionPool):
    ConnectionCls = TLSConnection


class Adapter(HTTPAdapter):
    """requests' adapter with pools that know how long each connection has been idle."""
    pool_classes = {"http": HTTPPool, "https": HTTPSPool}

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self.pool_classes
        self._pool_for = {}
        self._target_for = {}

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        """The pool for this request, remembered per URL and TLS settings, which are all it depends on when
        no proxy applies: requests works it out again on every call (proxy selection, TLS attributes, a pool
        key normalised and looked up), ~3% of an upstream call's CPU here. A remembered pool is used only
        while its manager still holds it: urllib3 drops a pool it evicts (past `pool_connections` origins)
        without closing it, and a pool outside the manager would escape `close_idle`."""
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        key = (request.url, verify, cert)
        pool = self._pool_for.get(key)
        if pool is None or not _held(self.poolmanager, pool):
            pool = _remember(self._pool_for, key, super().get_connection_with_tls_context(request, verify,
                                                                                          proxies, cert))
        return pool

    def request_url(self, request, proxies):
        """The request line's target: without a proxy, the URL's path and query, as requests gives it, read
        once per URL rather than after a proxy look-up and a URL parse on every call."""
        if proxies:
            return super().request_url(request, proxies)
        target = self._target_for.get(request.url)
        if target is None:
            target = _remember(self._target_for, request.url, super().request_url(request, proxies))
        return target

    def build_response(self, req, resp):
        """requests' Response, without reading Set-Cookie into a jar: the gateway sends no cookie an
        upstream or an image host sets (make_session keeps none), so the parse (~2% of a call) served nothing."""
        response = Response()
        response.status_code = getattr(resp, "status", None)
        response.headers = CaseInsensitiveDict(getattr(resp, "headers", {}))
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else req.url
        response.request = req
        response.connection = self
        return response

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        """Through HTTP(S)_PROXY too (a SOCKS proxy keeps its own pool classes)."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:
            manager.pool_classes_by_scheme = self.pool_classes
        return manager


def _remember(memo, key, value):
    """value, kept in `memo` under `key`; a memo that reached _POOLS_REMEMBERED entries starts over (image
    downloads reach any URL)."""
    if len(memo) >= _POOLS_REMEMBERED:
        memo.clear()
    memo[key] = value
    return value


def close_idle(session, max_idle, now=None, keep=KEEP_WARM):
    """Close the connections of `session` that sat in their pool for `max_idle` seconds or more, but for
    the `keep` most recently used of each pool. Returns how many were closed. Safe beside requests in
    flight: a connection is taken out of its pool (its slot left empty, as a fresh pool's are) before it is
    closed."""
    now = time.monotonic() if now is None else now
    stale = []
    for adapter in {id(a): a for a in session.adapters.values()}.values():
        managers = [getattr(adapter, "poolmanager", None), *getattr(adapter, "proxy_manager", {}).values()]
        for manager in filter(None, managers):
            for pool in _pools(manager):
                stale.extend(_take_stale(pool, now - max_idle, keep))
    for conn in stale:
        conn.close()
    return len(stale)


def _held(manager, pool):
    return any(p is pool for p in _pools(manager))


def _pools(manager):
    container = manager.pools
    with container.lock:  # a snapshot without touching the pools' least-recently-used order
        return list(container._container.values())


def _take_stale(pool, before, keep):
    queue = getattr(pool, "pool", None)
    if queue is None:  # a closed pool
        return []
    # queue.LifoQueue guards its list with a mutex; gevent's, which replaces it in a patched worker, has
    # none and needs none: nothing here gives the event loop a turn.
    with getattr(queue, "mutex", contextlib.nullcontext()):
        taken = []
        slots = queue.queue  # the next connection handed out is the last: the newest at the end
        idle = [i for i, conn in enumerate(slots) if getattr(conn, "gateway_idle_since", None) is not None]
        for i in idle[:max(0, len(idle) - keep)]:
            if slots[i].gateway_idle_since <= before:
                taken.append(slots[i])
                slots[i] = None
        return taken
