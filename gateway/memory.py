"""After a burst, give the memory the worker freed back to the system.

glibc keeps freed heap memory for reuse: a worker that held 1,000 streams stays at its high-water mark
(~140 MB here) long after they end, though most of it is free. `malloc_trim(0)` returns the free pages
(~20 MB per worker after 2,000 streams, measured). It walks the heap (a few ms), so it runs only when the
worker was quiet for a whole check interval and has grown since it last trimmed. Without glibc it does nothing.
"""
import ctypes
import os

_PAGE = os.sysconf("SC_PAGE_SIZE")
GROWTH_BYTES = 16 << 20  # trim again only after this much growth since the last trim


def _malloc_trim():
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


class Trimmer:
    def __init__(self, growth_bytes=GROWTH_BYTES, trim=None, rss=rss_bytes):
        self.growth_bytes = growth_bytes
        self._trim = trim if trim is not None else _malloc_trim()
        self._rss = rss
        self._after_last = None

    def tick(self, quiet):
        """Called every check interval; `quiet`: no request started since the previous call.
        Returns the bytes given back, or None when it did not trim."""
        if self._trim is None or not quiet:
            return None
        before = self._rss()
        if before is None or (self._after_last is not None and before - self._after_last < self.growth_bytes):
            return None
        self._trim(0)
        self._after_last = self._rss()
        return before - self._after_last
