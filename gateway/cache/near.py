"""The near tier: answers this worker has just read from Redis, kept in process for about a second.

A hot entry (the same request from many clients, a client retrying, a benchmark) was fetched from Redis on
every hit: a round trip, a reply to parse and JSON to decode, ~15% of a cache hit's CPU. The near tier answers
repeats of an entry read in the last `seconds` without Redis. What that costs in freshness: an entry can be
served up to `seconds` after Redis let it go (its TTL ran out, or Redis restarted) or after a refresh
(`Cache-Control: no-cache`) replaced it from another worker; this worker drops its copy when it writes one.
What it costs in memory: at most `max_entries` entries, each under `max_value_bytes` as stored, kept for
`seconds`.

Entries are shared between requests: callers copy before they change anything (the handlers do).
Only entries read from Redis come here; the in-process backend (no REDIS_URL) needs no second tier.
"""
import time


class NearCache:
    def __init__(self, seconds, max_entries=128, max_value_bytes=8192, clock=time.monotonic):
        self.seconds = seconds
        self.max_entries, self.max_value_bytes = max_entries, max_value_bytes
        self._clock = clock
        self._items = {}  # key -> (expires_at, entry), oldest first

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            self._items.pop(key, None)
            return None
        return item[1]

    def drop(self, key):
        self._items.pop(key, None)

    def put(self, key, entry, stored_bytes):
        """Keep `entry` (read from the shared store, `stored_bytes` long there) for `seconds`."""
        if stored_bytes > self.max_value_bytes:
            return
        items = self._items
        items.pop(key, None)
        items[key] = (self._clock() + self.seconds, entry)
        while len(items) > self.max_entries:
            items.pop(next(iter(items)), None)

    def __len__(self):
        return len(self._items)
