"""After a burst, give the memory the worker freed back to the system.

glibc keeps freed heap memory for reuse: a worker that held 1,000 streams stays at its high-water mark
(~135 MB here) long after they end, though most of it is free. `malloc_trim(0)` returns the free pages
wherever they are in the heap; with Python objects on malloc too (PYTHONMALLOC=malloc, see gunicorn.conf.py)
a worker that held 1,000 streams settles within a few MB of where it was before them (~80 MB here, against
86-107 MB before the two measures described below, and ~107-112 MB on Python's own allocator). A full garbage
collection first frees what reference cycles still hold (a finished stream's frames and responses). Each takes
tens of ms, and a request arriving meanwhile waits: the collection runs on the event loop, and the trim, though
it runs in gevent's thread pool, holds the heap's lock, which the loop needs to allocate. So both run only when
the worker was quiet for a whole check interval (health checks and metrics scrapes do not count) and has grown,
or holds more free memory, since it last trimmed, or has closed many idle upstream connections since. Without
glibc it does nothing.

A trim cannot give back a page that still holds one live object, and the few objects that outlive a burst are
spread over all the pages it used. After 1,000 streams most of them were of two kinds (found by walking the
heap): the idle upstream connections, made in the middle of their streams and closed 5 s after they went idle,
so after the first quiet trim (closing one frees ~2.7 KB, and lets the next trim give back ~37 KB); and strings
held by CPython's method cache (see `_clear_type_cache`).
"""
import ctypes
import gc
import os
import sys

from gateway.deadline import gevent_patched

_PAGE = os.sysconf("SC_PAGE_SIZE")
GROWTH_BYTES = 16 << 20  # trim again only after RSS, or the heap's free memory, grew this much
RELEASED_CONNECTIONS = 64  # or after this many idle upstream connections were closed (~2 MB of pages)


def _malloc_trim():
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return _off_the_loop(trim)


def _off_the_loop(fn):
    """`fn` run in gevent's thread pool when gevent has patched this process, so the loop serves requests
    meanwhile; called directly otherwise."""
    def call(*args):
        if gevent_patched("threading"):
            import gevent
            return gevent.get_hub().threadpool.apply(fn, args)
        return fn(*args)
    return call


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_free_bytes():
    """A function returning the bytes malloc holds free (glibc 2.33+'s mallinfo2), or None elsewhere."""
    try:
        info = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    info.argtypes, info.restype = [], _MallInfo2
    return lambda: info().fordblks


def freeze_loaded():
    """Leave everything the worker has loaded so far (its modules, the app, its tables: ~90,000 objects) out of
    every later garbage collection. A full collection walks every object it tracks, and these never become
    garbage: under load it stalled the worker, and every request in flight on it, for 40-135 ms each time,
    collecting nothing; after this, 1-4 ms (and the collector's CPU fell by about half). Called once the app is
    loaded (gunicorn.conf.py's post_worker_init), after a collection, so no garbage of the start is kept."""
    gc.collect()
    gc.freeze()


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


def _clear_type_cache():
    """Empty CPython's method cache. Each of its 4,096 entries holds the attribute name last looked up through
    it, and C code that calls a method by a C string makes a new string each time (datetime's `timetuple()` looks
    up `dst`, for the Date header of every response): after 1,000 streams ~1,300 such strings, each made in the
    middle of the burst, kept ~5 MB of pages resident. The cache fills again as the next requests look names up."""
    clear = getattr(sys, "_clear_type_cache", None)
    if clear is not None:
        clear()


class Trimmer:
    """Trims a quiet worker whose RSS grew, or whose heap gained free memory, by `growth_bytes` since its last
    trim, or which closed `released_connections` idle upstream connections since."""

    def __init__(self, growth_bytes=GROWTH_BYTES, trim=None, rss=rss_bytes, free=None,
                 released_connections=RELEASED_CONNECTIONS):
        self.growth_bytes = growth_bytes
        self.released_connections = released_connections
        self._trim = trim if trim is not None else _malloc_trim()
        self._rss = rss
        self._free = free if free is not None else (_malloc_free_bytes() or (lambda: 0))
        self._after_last = None
        self._free_after_last = 0
        self._released = 0

    def tick(self, quiet, released=0):
        """Called every check interval; `quiet`: no request started since the previous call, none in flight;
        `released`: idle upstream connections closed since the previous call. Returns the bytes given back, or
        None when it did not trim."""
        self._released += released
        if self._trim is None or not quiet:
            return None
        before = self._rss()
        if before is None:
            return None
        if (self._after_last is not None and before - self._after_last < self.growth_bytes
                and self._free() - self._free_after_last < self.growth_bytes
                and self._released < self.released_connections):
            return None
        self._released = 0
        _clear_type_cache()
        gc.collect()
        self._trim(0)
        self._after_last, self._free_after_last = self._rss(), self._free()
        return before - self._after_last


class Activity:
    """WSGI middleware counting requests started and finished. A response finishes when the server closes
    it: a stream only after its last byte (or when its client goes away), not when its headers go. Probes
    and scrapes are not counted: a load balancer checking every few seconds must not keep a worker 'busy'."""

    UNCOUNTED = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app):
        self.app = app
        self.started = 0
        self.finished = 0

    def reading(self):
        """(requests started so far, requests in flight)."""
        return self.started, self.started - self.finished

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") in self.UNCOUNTED:
            return self.app(environ, start_response)
        self.started += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.finished += 1
            raise
        return _Closing(body, self)


class _Closing:
    __slots__ = ("_body", "_activity", "_open")

    def __init__(self, body, activity):
        self._body, self._activity, self._open = body, activity, True

    def __iter__(self):
        return iter(self._body)

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._open:
                self._open = False
                self._activity.finished += 1
