import hashlib
import threading
import time

import pytest
from sqlalchemy import select

from gateway.extensions import DatabaseTimeout, make_engine
from sqlalchemy.exc import OperationalError

from gateway.store import keys as keys_module
from gateway.store.keys import KeyCache, KeyStoreUnavailable, create_key, generate_key, list_keys, revoke_key
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


def _expired(engine, name, **cache_args):
    """A key, and a cache (TTL 0.05 s) that looked it up once and whose entry has just expired."""
    key, key_id = create_key(engine, name)
    cache = KeyCache(engine, ttl=0.05, **cache_args)
    cache.lookup(key)
    time.sleep(0.15)
    return key, key_id, cache


def test_while_an_expired_key_is_reloaded_the_others_use_its_last_answer(engine):
    key, key_id, cache = _expired(engine, "erin")
    load, seen, queries = cache._load, [], []

    def slow_load(digest):                            # the query is in flight: other requests come in
        queries.append(digest)
        seen.append(cache.lookup(key))                # ... and must not query again
        return load(digest)
    cache._load = slow_load
    assert cache.lookup(key).id == key_id
    assert len(queries) == 1 and seen[0].id == key_id


def _first_lookups_at_once(cache, key, n=20):
    """`n` requests with `key` arriving together at a cache that has no answer for it yet; each one's answer."""
    start, answers = threading.Barrier(n), [None] * n

    def request(i):
        start.wait()
        try:
            answers[i] = cache.lookup(key)
        except Exception as e:  # noqa: BLE001 - the answer under test
            answers[i] = e
    threads = [threading.Thread(target=request, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return answers


@pytest.fixture
def long_load_timeout(monkeypatch):
    """A look-up's bound far past the tests' own waits: a request that waited for it, and was not woken by the
    look-up's answer, makes the test run 30 s and fail."""
    monkeypatch.setattr(keys_module, "_LOAD_TIMEOUT", 30.0)


def _slow(load, queries, seconds, fail_first=None):
    def slow_load(digest):                            # the query takes a while: the other requests arrive
        queries.append(digest)
        time.sleep(seconds)
        if fail_first is not None and len(queries) == 1:
            raise fail_first
        return load(digest)
    return slow_load


def test_a_new_workers_first_requests_with_a_key_make_one_query_and_all_wait_for_it(engine, long_load_timeout):
    key, key_id = create_key(engine, "quinn")
    cache = KeyCache(engine, ttl=5)
    queries = []
    cache._load = _slow(cache._load, queries, 0.3)
    began = time.monotonic()
    answers = _first_lookups_at_once(cache, key)
    assert time.monotonic() - began < 10              # woken by the answer, not by the bound
    assert len(queries) == 1
    assert [a.id for a in answers] == [key_id] * 20


def test_when_the_first_look_up_fails_with_an_error_the_waiting_requests_each_ask_once(engine, long_load_timeout):
    key, key_id = create_key(engine, "rosa")
    cache = KeyCache(engine, ttl=5)
    queries = []
    cache._load = _slow(cache._load, queries, 0.2, fail_first=AttributeError("a bug, not the database"))
    began = time.monotonic()
    answers = _first_lookups_at_once(cache, key, n=5)
    assert time.monotonic() - began < 10
    assert sum(isinstance(a, AttributeError) for a in answers) == 1   # the request whose look-up it was
    assert [a.id for a in answers if not isinstance(a, AttributeError)] == [key_id] * 4
    assert len(queries) == 5                          # the one that failed, then one each: no queue, no retry loop


def test_requests_waiting_for_a_look_up_that_hangs_ask_themselves_once_its_bound_has_passed(engine, monkeypatch):
    key, key_id = create_key(engine, "sven")
    monkeypatch.setattr(keys_module, "_LOAD_TIMEOUT", 0.5)
    cache = KeyCache(engine, ttl=5)
    load, release, hanging = cache._load, threading.Event(), threading.Event()

    def first_hangs(digest):
        if not hanging.is_set():
            hanging.set()
            release.wait(20)                          # a hung database, where nothing cuts the call short
        return load(digest)
    cache._load = first_hangs
    first = threading.Thread(target=cache.lookup, args=(key,))
    first.start()
    assert hanging.wait(5)
    began = time.monotonic()
    answers = _first_lookups_at_once(cache, key, n=10)
    waited = time.monotonic() - began
    release.set()
    first.join(10)
    assert [a.id for a in answers] == [key_id] * 10
    assert waited < 10                                # not until the hung look-up ends
    assert not cache._loading and not cache._loaded


def test_during_an_outage_a_new_key_sent_at_once_by_many_requests_is_one_query(engine, long_load_timeout):
    key, _ = create_key(engine, "tara")
    cache = KeyCache(engine, ttl=5)
    queries = []
    cache._load = _slow(_down, queries, 0.2)
    answers = _first_lookups_at_once(cache, key)
    assert all(isinstance(a, KeyStoreUnavailable) for a in answers)
    assert len(queries) == 1


def test_an_unknown_key_sent_at_once_by_many_requests_is_one_query(engine, long_load_timeout):
    cache = KeyCache(engine, ttl=5)
    queries = []
    cache._load = _slow(cache._load, queries, 0.2)
    assert _first_lookups_at_once(cache, generate_key()) == [None] * 20
    assert len(queries) == 1


def _down(digest):
    raise OperationalError("SELECT ...", {}, Exception("connection refused"))


def test_with_the_database_down_a_key_seen_valid_stays_valid_and_is_retried_once_a_second(engine, caplog):
    key, key_id, cache = _expired(engine, "frank")
    load, calls = cache._load, []
    cache._load = lambda digest: (calls.append(digest), _down(digest))
    for _ in range(50):
        assert cache.lookup(key).id == key_id
    assert len(calls) == 1                            # not once per request
    said = [r.getMessage() for r in caplog.records if "could not look up an API key" in r.getMessage()]
    assert len(said) == 1 and "connection refused" in said[0]
    assert keys_module.hash_key(key) not in said[0] and "SELECT" not in said[0]   # no statement, no digest
    cache._load = load
    revoke_key(engine, str(key_id))
    time.sleep(1.05)                                  # the retry is due: it runs aside, this request passes
    assert cache.lookup(key).id == key_id
    _settled(cache)
    assert cache.lookup(key) is None                  # the database answered: the revocation holds


def _settled(cache, timeout=5):
    deadline = time.monotonic() + timeout
    while cache._loading and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not cache._loading


def test_while_the_database_fails_a_confirmed_key_never_waits_on_it(engine):
    key, key_id, cache = _expired(engine, "nina")
    cache._load = _down
    assert cache.lookup(key).id == key_id             # the outage is seen: the key stays valid
    release, calls = threading.Event(), []

    def hung(digest):                                 # a database that does not answer until released
        calls.append(digest)
        release.wait(10)
        _times_out(digest)
    cache._load = hung
    time.sleep(1.05)                                  # the retry is due
    started = time.monotonic()
    for _ in range(20):
        assert cache.lookup(key).id == key_id
    assert time.monotonic() - started < 0.5 and len(calls) == 1   # one look-up, aside
    release.set()
    _settled(cache)
    assert cache.lookup(key).id == key_id             # still failing, still confirmed recently: valid


def test_a_key_not_seen_valid_still_waits_for_its_answer_during_an_outage(engine):
    key, _ = create_key(engine, "olga")
    cache = KeyCache(engine)
    cache._failing = True
    cache._load = _times_out
    with pytest.raises(KeyStoreUnavailable):          # nothing to go on with: the look-up is this request's
        cache.lookup(key)


def test_with_the_database_down_an_unseen_key_is_refused_without_a_query_per_request(engine):
    key, _ = create_key(engine, "grace")
    cache = KeyCache(engine)
    calls = []
    cache._load = lambda digest: (calls.append(digest), _down(digest))
    for _ in range(20):
        with pytest.raises(KeyStoreUnavailable):
            cache.lookup(key)
    assert len(calls) == 1


def test_a_key_confirmed_too_long_ago_is_not_kept_valid_through_an_outage(engine):
    key, _, cache = _expired(engine, "heidi", max_stale=0.1)
    cache._load = _down
    with pytest.raises(KeyStoreUnavailable):
        cache.lookup(key)


def test_an_error_that_is_not_an_outage_never_keeps_a_key_valid(engine):
    key, _, cache = _expired(engine, "ivan")

    def broken(digest):
        raise AttributeError("a bug, not the database")
    cache._load = broken
    with pytest.raises(AttributeError):
        cache.lookup(key)


def _times_out(digest):
    raise DatabaseTimeout("no answer from the database within 2 s")


def test_a_look_up_that_times_out_is_an_outage_not_an_error(engine):
    key, key_id, cache = _expired(engine, "kim")
    cache._load = _times_out
    assert cache.lookup(key).id == key_id             # confirmed a moment ago: stays valid
    other, _ = create_key(engine, "not seen")
    with pytest.raises(KeyStoreUnavailable):          # not seen: a 503, not a 500
        cache.lookup(other)


def test_a_key_whose_look_ups_keep_timing_out_is_refused_once_its_confirmation_is_too_old(engine):
    key, key_id, cache = _expired(engine, "liam", max_stale=0.6)
    cache._load = _times_out
    assert cache.lookup(key).id == key_id
    time.sleep(1.05)                                  # retried, timed out again: that confirms nothing
    with pytest.raises(KeyStoreUnavailable):
        cache.lookup(key)


def test_after_a_slow_failed_look_up_the_retry_waits_a_second_from_the_failure(engine):
    key, key_id, cache = _expired(engine, "mona")
    calls = []

    def slow_timeout(digest):                         # as a look-up cut short after its bound
        calls.append(digest)
        time.sleep(1.2)
        _times_out(digest)
    cache._load = slow_timeout
    assert cache.lookup(key).id == key_id
    assert cache.lookup(key).id == key_id             # right after: no second wait on the hung database
    assert len(calls) == 1


def test_a_reload_that_hangs_is_not_waited_on_past_the_ttl(engine):
    key, key_id, cache = _expired(engine, "judy")
    digest = keys_module.hash_key(key)
    cache._loading[digest] = time.monotonic()         # another request's reload, just started
    assert cache.lookup(key).id == key_id             # the last answer, meanwhile
    revoke_key(engine, str(key_id))
    cache._loading[digest] = time.monotonic() - 1     # ... and still not back after the ttl
    assert cache.lookup(key) is None                  # this request asks the database itself


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
