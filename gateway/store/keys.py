"""API keys: made from `secrets`, stored only as SHA-256, looked up through a short-lived cache."""
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
import time

from sqlalchemy import select, update
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from gateway.extensions import DatabaseTimeout, time_limit
from gateway.store.models import api_keys, utcnow

PREFIX = "gw_"
PREFIX_LEN = 11  # "gw_" + 8 characters, shown in listings
_NEGATIVE_TTL = 1.0  # unknown keys are remembered briefly so a bad client cannot hammer the database
_RETRY_SECONDS = 1.0  # with the database unreachable, a key's look-up is tried again at most this often
_MAX_STALE_SECONDS = 600.0  # and a key confirmed valid at most this long ago stays valid meanwhile
_LOAD_TIMEOUT = 2.0  # a look-up (a few ms) not answered in this long is a hung database: an outage
_FLUSH_TIMEOUT = 5.0
_OUTAGE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError,
           DatabaseTimeout)  # not a bug: the database
_UNAVAILABLE = object()

log = logging.getLogger("gateway")


class KeyStoreUnavailable(Exception):
    """The database could not say whether a key is valid, and the key was not confirmed valid recently."""


def generate_key():
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key):
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(token):
    return token.startswith(PREFIX) and 35 <= len(token) <= 200 and token.isascii()


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    rate_limit_per_minute: int | None
    cache_enabled: bool
    cache_ttl_seconds: int


def _info(row):
    return KeyInfo(row.id, row.name, row.key_prefix, row.rate_limit_per_minute, row.cache_enabled,
                   row.cache_ttl_seconds)


def create_key(engine, name, rate_limit_per_minute=None, cache_enabled=True, cache_ttl_seconds=3600):
    """Make a key and store its hash; the plaintext is returned once and never kept."""
    key = generate_key()
    with engine.begin() as conn:
        result = conn.execute(api_keys.insert().values(
            name=name, key_hash=hash_key(key), key_prefix=key[:PREFIX_LEN],
            rate_limit_per_minute=rate_limit_per_minute, cache_enabled=cache_enabled,
            cache_ttl_seconds=cache_ttl_seconds, created_at=utcnow()))
        key_id = result.inserted_primary_key[0]
    return key, key_id


def list_keys(engine):
    with engine.connect() as conn:
        return conn.execute(select(api_keys).order_by(api_keys.c.id)).all()


def revoke_key(engine, id_or_prefix):
    """Revoke by numeric id or by displayed prefix; returns the number of keys revoked."""
    table = api_keys
    if str(id_or_prefix).isdigit():
        where = table.c.id == int(id_or_prefix)
    else:
        where = table.c.key_prefix == id_or_prefix
    with engine.begin() as conn:
        matches = conn.execute(select(table.c.id).where(where, table.c.revoked_at.is_(None))).all()
        if len(matches) > 1:
            raise ValueError(f"{id_or_prefix!r} matches {len(matches)} keys; revoke by id")
        if matches:
            conn.execute(update(table).where(table.c.id == matches[0].id).values(revoked_at=utcnow()))
        return len(matches)


class KeyCache:
    """Answers "which key is this?" without a database query per request.

    Entries live `ttl` seconds, so a revoked key stops working within that time on every worker.
    `last_used_at` is kept in memory and written in one batch by `flush_last_used`.
    """

    def __init__(self, engine, ttl=5.0, max_stale=_MAX_STALE_SECONDS):
        self.engine = engine
        self.ttl = ttl
        self.max_stale = max_stale
        self._entries = {}          # digest -> (KeyInfo, None or _UNAVAILABLE; expires at; confirmed at)
        self._used = {}
        self._lock = threading.Lock()
        self._loading = {}          # digest -> when its reload started
        self._loaded = {}           # digest -> an Event set when that reload has stored its answer
        self._failing = False

    def lookup(self, token):
        """The key's KeyInfo, or None for an unknown or revoked key. Raises KeyStoreUnavailable when the
        database cannot answer for a key this worker has not seen valid recently."""
        digest = hash_key(token)
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            entry = self._reload(digest, entry)
        info = entry[0]
        if info is _UNAVAILABLE:
            raise KeyStoreUnavailable()
        if info is not None:
            self._used[info.id] = time.time()
        return info

    def _reload(self, digest, stale):
        """One query per key at a time: while it runs (the worker serves other requests meanwhile), requests
        with the same key go on with its last answer, for at most `ttl`, rather than each querying; at c=64
        an expiry had every request in flight query at once. Requests with a key this worker has no answer for
        yet (its first requests after a start) wait for the look-up under way, at most until `_LOAD_TIMEOUT`
        after it began (a new worker's first burst at c=64 made 64 queries, and opened as many connections as
        the pool allows); if it brings no answer (an error, or it hangs), each asks once itself.

        With the database unreachable, a key confirmed valid in the last `max_stale` seconds stays valid,
        tried again once a second, so an outage does not fail every request; a key not seen, or seen too
        long ago, gets KeyStoreUnavailable (for a second, without a query per request). Only connection
        failures, and a look-up not answered within `_LOAD_TIMEOUT` (a hung database: under gevent it is
        cut short), count as an outage: any other error is raised, and a key never stays valid for it. An
        outage never moves a key's confirmation time, so no key outlives `max_stale` unconfirmed. While an
        outage lasts, such a key's look-ups run aside: no request waits on a database that does not answer,
        and a revocation made meanwhile holds once a look-up gets through (the request that starts it still
        passes)."""
        now = time.monotonic()
        with self._lock:
            if stale is None and digest in self._entries:
                return self._entries[digest]  # stored since this request looked
            started = self._loading.get(digest)
            loading = started is not None and now - started < self.ttl
            if loading and stale is not None:
                return stale
            loaded = self._loaded.get(digest) if loading else None
            if loaded is None:
                self._start_loading(digest, now)
        if loaded is not None:
            loaded.wait(max(0.0, started + _LOAD_TIMEOUT - now))
            entry = self._entries.get(digest)
            if entry is not None:
                return entry
            # That look-up failed with an error (not an outage) or still hangs: this request asks itself, once.
            now = time.monotonic()
            with self._lock:
                self._start_loading(digest, now)
        if self._failing and self._kept_through_outage(stale, now):
            # The database is failing: a look-up may take _LOAD_TIMEOUT to fail again, and this key would stay
            # valid anyway. So it runs aside and this request goes on with the key's last answer.
            threading.Thread(target=self._load_into, args=(digest, stale, now), name="gateway-key-reload",
                             daemon=True).start()
            return stale
        return self._load_into(digest, stale, now)

    def _kept_through_outage(self, stale, now):
        """A key confirmed valid within `max_stale`: an outage leaves it valid."""
        return stale is not None and stale[0] not in (None, _UNAVAILABLE) and now - stale[2] < self.max_stale

    def _load_into(self, digest, stale, now):
        try:
            entry = self._look_up(digest, stale, now)
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[digest] = entry
            return entry
        finally:
            self._done_loading(digest, now)

    def _look_up(self, digest, stale, now):
        """The new cache entry for `digest` (see `_reload`)."""
        try:
            with time_limit(self.engine, _LOAD_TIMEOUT):
                info = self._load(digest)
        except _OUTAGE as e:
            self._say_failing(e)
            retry = time.monotonic() + _RETRY_SECONDS  # from the failure: a look-up that timed out took a while
            if stale is not None and stale[0] is None:
                return (None, retry, stale[2])                    # unknown before: still unknown
            if self._kept_through_outage(stale, now):
                return (stale[0], retry, stale[2])
            return (_UNAVAILABLE, retry, now)
        if self._failing:
            self._failing = False
            log.warning("API key look-ups work again")
        return (info, now + (self.ttl if info else min(self.ttl, _NEGATIVE_TTL)), now)

    def _start_loading(self, digest, now):
        """This request looks `digest` up (the caller holds the lock). Requests still waiting for an earlier
        look-up of it, one that hangs, go on: they will not get its answer."""
        earlier = self._loaded.get(digest)
        if earlier is not None:
            earlier.set()
        self._loading[digest] = now
        self._loaded[digest] = threading.Event()

    def _done_loading(self, digest, started):
        """The reload of `digest` begun at `started` is over: requests waiting for its answer go on."""
        with self._lock:
            if self._loading.get(digest) == started:
                del self._loading[digest]
                loaded = self._loaded.pop(digest, None)
                if loaded is not None:
                    loaded.set()

    def _say_failing(self, e):
        if not self._failing:
            self._failing = True
            cause = getattr(e, "orig", None) or e  # the driver's message, without SQLAlchemy's statement and parameters
            log.warning("could not look up an API key (%s: %s); keys confirmed valid in the last %d s stay valid "
                        "until the database answers again", type(e).__name__, str(cause).strip()[:200],
                        self.max_stale)

    def _load(self, digest):
        table = api_keys
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.key_hash == digest)).first()
        # The index found the row; compare anyway in constant time so no timing tells how close a guess was.
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
            return None
        return _info(row)

    def flush_last_used(self):
        with self._lock:
            used, self._used = self._used, {}
        if not used:
            return 0
        table = api_keys
        with time_limit(self.engine, _FLUSH_TIMEOUT), self.engine.begin() as conn:
            for key_id, ts in used.items():
                conn.execute(update(table).where(table.c.id == key_id).values(
                    last_used_at=dt.datetime.fromtimestamp(ts, dt.timezone.utc)))
        return len(used)
