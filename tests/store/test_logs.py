"""insert_ignoring_duplicates: one INSERT per batch on PostgreSQL (its rows as one JSON parameter), duplicates
skipped and counted, every value stored as its column's type."""
import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import event, select

from gateway.extensions import make_engine
from gateway.store.logs import _MAX_ROWS_PER_STATEMENT, insert_ignoring_duplicates, normalize
from tests.store.test_logwriter import T, all_stored_once, log_row


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, sqlite_url):
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def statements(engine):
    seen = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, context, many: seen.append((statement, many,
                                                                                          parameters)))
    return seen


def test_a_batch_is_stored_once_and_a_repeat_only_adds_the_new_rows(engine):
    rows = [normalize(log_row()) for _ in range(_MAX_ROWS_PER_STATEMENT)]
    seen = statements(engine)
    assert insert_ignoring_duplicates(engine, rows) == len(rows)
    if engine.dialect.name == "postgresql":
        # One statement for the batch, not one per row (psycopg2's executemany sends one per row), its rows
        # as one JSON parameter.
        assert len(seen) == 1 and not seen[0][1] and len(json.loads(seen[0][2][0])) == len(rows)
    fresh = [normalize(log_row()) for _ in range(10)]
    assert insert_ignoring_duplicates(engine, rows[:30] + fresh) == 10
    assert all_stored_once(engine, [r["request_id"] for r in rows + fresh])


def test_a_new_batch_is_sent_as_a_plain_insert_and_stored_once(engine):
    rows = [normalize(log_row()) for _ in range(50)]
    seen = statements(engine)
    assert insert_ignoring_duplicates(engine, rows, new=True) == len(rows)
    assert all_stored_once(engine, [r["request_id"] for r in rows])
    if engine.dialect.name == "postgresql":
        # A live batch's request_ids are new: PostgreSQL is spared ON CONFLICT's speculative insertion.
        inserts = [sql for sql, _, _ in seen if sql.startswith("INSERT")]
        assert len(inserts) == 1 and "ON CONFLICT" not in inserts[0]


def test_a_new_batch_holding_a_stored_row_is_inserted_again_skipping_it(engine):
    stored = [normalize(log_row()) for _ in range(5)]
    assert insert_ignoring_duplicates(engine, stored) == 5
    fresh = [normalize(log_row()) for _ in range(20)]
    seen = statements(engine)
    assert insert_ignoring_duplicates(engine, fresh[:10] + stored[2:3] + fresh[10:], new=True) == 20
    assert all_stored_once(engine, [r["request_id"] for r in stored + fresh])
    if engine.dialect.name == "postgresql":
        inserts = [sql for sql, _, _ in seen if sql.startswith("INSERT")]
        assert ["ON CONFLICT" in sql for sql in inserts] == [False, True]


def test_a_new_batch_refused_for_another_reason_is_not_retried(engine):
    from sqlalchemy.exc import IntegrityError
    row = normalize(log_row())
    del row["endpoint"]  # NOT NULL
    seen = statements(engine)
    with pytest.raises(IntegrityError):
        insert_ignoring_duplicates(engine, [row], new=True)
    assert len([sql for sql, _, _ in seen if sql.startswith("INSERT")]) == 1
    assert not _stored(engine, row["request_id"])


def _stored(engine, request_id):
    with engine.connect() as conn:
        return conn.execute(select(T.c.request_id).where(T.c.request_id == request_id)).all()


def test_more_rows_than_a_statement_holds(engine):
    rows = [normalize(log_row()) for _ in range(_MAX_ROWS_PER_STATEMENT * 2 + 7)]
    assert insert_ignoring_duplicates(engine, rows) == len(rows)
    assert all_stored_once(engine, [r["request_id"] for r in rows])


def test_values_arrive_as_their_column_types(engine):
    created = dt.datetime(2026, 11, 26, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    row = normalize(log_row(cost_usd=Decimal("1234.56789012"), saved_usd=Decimal("0.00000001"), created_at=created,
                            cache_hit=True, failover_used=False, stream=True, api_key_id=2 ** 40,
                            error_message="it's 100% \"quoted\" %s %(x)s \x00 ünïcode"))
    assert insert_ignoring_duplicates(engine, [row]) == 1
    with engine.connect() as conn:
        back = conn.execute(select(T).where(T.c.request_id == row["request_id"])).one()
    assert (back.cost_usd, back.saved_usd) == (Decimal("1234.56789012"), Decimal("0.00000001"))
    assert (back.created_at if back.created_at.tzinfo else back.created_at.replace(tzinfo=dt.timezone.utc)) == created
    assert (back.cache_hit, back.failover_used, back.stream, back.api_key_id) == (True, False, True, 2 ** 40)
    assert back.error_message == row["error_message"] and back.prompt_tokens == 10 and back.total_tokens == 15


def test_columns_without_a_value_are_not_sent_and_are_stored_as_null(engine):
    row = normalize(log_row(customer_id=None, feature=None, error_message=None, cost_usd=None))
    assert not {"customer_id", "feature", "error_message", "cost_usd", "end_user"} & row.keys()
    assert (row["cache_hit"], row["failover_used"], row["stream"]) == (False, False, False)
    seen = statements(engine)
    assert insert_ignoring_duplicates(engine, [row]) == 1
    if engine.dialect.name == "postgresql":
        assert b"null" not in [p for sql, _, p in seen if sql.startswith("INSERT")][0][0].encode()
    with engine.connect() as conn:
        back = conn.execute(select(T).where(T.c.request_id == row["request_id"])).one()
    assert (back.customer_id, back.feature, back.error_message, back.cost_usd, back.end_user) == (None,) * 5
    assert (back.cache_hit, back.failover_used, back.stream, back.model) == (False, False, False, "gpt-4o-mini")


def test_large_rows_are_split_into_statements_of_bounded_size(engine, monkeypatch):
    from gateway.store import logs
    monkeypatch.setattr(logs, "_MAX_JSON_BYTES", 4096)
    rows = [normalize(log_row(error_message="é" * 1500)) for _ in range(9)]   # ~3 KB of JSON each
    seen = statements(engine)
    assert insert_ignoring_duplicates(engine, rows) == len(rows)
    assert all_stored_once(engine, [r["request_id"] for r in rows])
    if engine.dialect.name == "postgresql":
        arrays = [params[0] for sql, _, params in seen if sql.startswith("INSERT")]
        assert [len(json.loads(a)) for a in arrays] == [1] * 9   # one ~3 KB row per 4 KB statement
        assert all(len(a.encode()) <= 4096 for a in arrays)


def test_values_already_of_their_columns_type_pass_through_and_others_are_still_coerced():
    import datetime as dt
    from decimal import Decimal
    from gateway.store import logs
    when = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)
    row = normalize(log_row(model="gpt-4o-mini", latency_ms=12, cache_hit=True, created_at=when))
    assert (row["model"], row["latency_ms"], row["cache_hit"], row["created_at"]) == ("gpt-4o-mini", 12, True, when)
    # what the fast path must not let through as it is
    odd = normalize(log_row(model="a\x00b", latency_ms=12.4, cache_hit=1, error_message="caf\udce9",
                            created_at=dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))))
    assert odd["model"] == "a\ufffdb" and odd["latency_ms"] == 12 and odd["cache_hit"] is True
    assert odd["error_message"] == "caf?"
    with pytest.raises(logs.BadRow):
        normalize(log_row(latency_ms=True))  # a bool is no int here, fast path or not
    assert odd["created_at"] == when and odd["created_at"].tzinfo is dt.timezone.utc
    assert len(normalize(log_row(model="m" * 1000))["model"]) == logs._LENGTHS["model"]
    assert normalize(log_row(cost_usd=Decimal("0.12345678901")))["cost_usd"] == Decimal("0.12345678901").quantize(
        logs._SCALES["cost_usd"])


def test_a_column_the_table_does_not_have_makes_the_row_bad():
    from gateway.store import logs
    with pytest.raises(logs.BadRow, match="unknown columns: colour, shape"):
        normalize(log_row(shape="round", colour="red"))
    with pytest.raises(logs.BadRow, match="unknown columns: id"):
        normalize(log_row(id=7))  # gateway_logs has no id column (alembic 0003)


def test_a_row_is_normalized_in_place_and_its_empty_columns_dropped():
    row = log_row(latency_ms=12.6, error_message=None, cache_hit=None)
    out = normalize(row)
    assert out is row  # the writer owns the row: no second dict per row
    assert row["latency_ms"] == 13 and "error_message" not in row
    assert row["cache_hit"] is False and row["stream"] is False  # booleans default to False


def test_a_row_written_to_the_spool_is_left_as_the_caller_had_it():
    from gateway.store.spool import decode, encode
    row = log_row(latency_ms=12.6, error_message=None)
    before = dict(row)
    assert decode(encode(row))["latency_ms"] == 13
    assert row == before


@pytest.mark.parametrize("column, value", [("prompt_tokens", 2 ** 31 - 1), ("prompt_tokens", -2 ** 31),
                                           ("api_key_id", 2 ** 63 - 1), ("latency_ms", 12.0)])
def test_integers_the_columns_hold_are_kept(column, value):
    assert normalize(log_row(**{column: value}))[column] == value


@pytest.mark.parametrize("column, value", [("prompt_tokens", 2 ** 31), ("completion_tokens", 1e300),
                                           ("total_tokens", -2 ** 31 - 1), ("api_key_id", 2 ** 63),
                                           ("cached_tokens", "99999999999"), ("latency_ms", Decimal("1e40"))])
def test_integers_beyond_their_column_make_the_row_bad(column, value):
    from gateway.store import logs
    with pytest.raises(logs.BadRow, match="out of the column's range"):
        normalize(log_row(**{column: value}))


def test_an_integer_the_database_cannot_hold_is_the_rows_fault_not_the_databases(engine):
    from gateway.store.logs import _is_bad_data
    row = normalize(log_row())
    row["completion_tokens"] = 10 ** 30  # past normalize, as a row from an older spool file could be
    with pytest.raises(Exception) as e:
        insert_ignoring_duplicates(engine, [row], new=True)
    assert _is_bad_data(e.value), repr(e.value)
