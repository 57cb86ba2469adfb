"""API keys: made from `secrets`, stored only as SHA-256, looked up through a short-lived cache."""
import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time

from sqlalchemy import select, update

from gateway.store.models import api_keys, utcnow

PREFIX = "gw_"
PREFIX_LEN = 11  # "gw_" + 8 characters, shown in listings
_NEGATIVE_TTL = 1.0  # unknown keys are remembered briefly so a bad client cannot hammer the database


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

    def __init__(self, engine, ttl=5.0):
        self.engine = engine
        self.ttl = ttl
        self._entries = {}
        self._used = {}
        self._lock = threading.Lock()

    def lookup(self, token):
        digest = hash_key(token)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or entry[1] < now:
            info = self._load(digest)
            entry = (info, now + (self.ttl if info else min(self.ttl, _NEGATIVE_TTL)))
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[digest] = entry
        info = entry[0]
        if info is not None:
            self._used[info.id] = time.time()
        return info

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
        with self.engine.begin() as conn:
            for key_id, ts in used.items():
                conn.execute(update(table).where(table.c.id == key_id).values(
                    last_used_at=dt.datetime.fromtimestamp(ts, dt.timezone.utc)))
        return len(used)
