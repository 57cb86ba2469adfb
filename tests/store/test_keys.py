import hashlib
import time

import pytest
from sqlalchemy import select

from gateway.extensions import make_engine
from gateway.store.keys import KeyCache, create_key, generate_key, list_keys, revoke_key
from gateway.store.models import api_keys


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, sqlite_url):
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return make_engine(url)


def test_key_format():
    key = generate_key()
    assert key.startswith("gw_")
    body = key[3:]
    assert len(body) >= 32
    assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert generate_key() != key


def test_only_the_sha256_is_stored(engine):
    key, key_id = create_key(engine, "alice", rate_limit_per_minute=60, cache_enabled=False, cache_ttl_seconds=10)
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
        stored = " ".join(str(v) for v in row)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in stored and key[11:] not in stored
    assert row.key_prefix == key[:11]
    assert (row.rate_limit_per_minute, row.cache_enabled, row.cache_ttl_seconds) == (60, False, 10)


def test_lookup_finds_live_keys_only(engine):
    key, key_id = create_key(engine, "bob")
    cache = KeyCache(engine, ttl=5)
    assert cache.lookup(key).id == key_id
    assert cache.lookup(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_a_revoked_key_stops_working_within_the_cache_ttl(engine):
    key, key_id = create_key(engine, "carol")
    cache = KeyCache(engine, ttl=0.2)
    assert cache.lookup(key) is not None
    assert revoke_key(engine, str(key_id)) == 1
    time.sleep(0.25)
    assert cache.lookup(key) is None


def test_lookups_within_the_ttl_do_not_query_the_database(engine):
    key, _ = create_key(engine, "dave")
    cache = KeyCache(engine, ttl=60)
    cache.lookup(key)
    calls = []
    cache._load = lambda digest: calls.append(digest)
    for _ in range(100):
        assert cache.lookup(key) is not None
    assert calls == []


def test_revoke_by_prefix(engine):
    key, _ = create_key(engine, "erin")
    assert revoke_key(engine, key[:11]) == 1
    assert revoke_key(engine, key[:11]) == 0
    assert [r.revoked_at is not None for r in list_keys(engine) if r.key_prefix == key[:11]] == [True]


def test_last_used_is_written_in_one_batch_not_per_request(engine):
    key, key_id = create_key(engine, "frank")
    cache = KeyCache(engine, ttl=60)
    for _ in range(5):
        cache.lookup(key)
    with engine.connect() as conn:
        assert conn.execute(select(api_keys.c.last_used_at).where(api_keys.c.id == key_id)).scalar() is None
    assert cache.flush_last_used() == 1
    with engine.connect() as conn:
        assert conn.execute(select(api_keys.c.last_used_at).where(api_keys.c.id == key_id)).scalar() is not None
    assert cache.flush_last_used() == 0
