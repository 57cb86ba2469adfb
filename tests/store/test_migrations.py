import datetime as dt
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from gateway.extensions import make_engine
from gateway.store.logs import insert_ignoring_duplicates, normalize
from gateway.store.migrate import alembic_config, is_current, upgrade
from gateway.store.models import model_pricing
from gateway.store.report import report
from tests.store.test_logwriter import log_row


def log_indexes(engine):
    """The columns of gateway_logs' indexes, but for those backing a constraint (request_id's unique one)."""
    return {tuple(i["column_names"]) for i in inspect(engine).get_indexes("gateway_logs")
            if not i.get("duplicates_constraint")}


def downgrade_to(url, revision):
    command.downgrade(alembic_config(url), revision)

EXPECTED_COLUMNS = {
    "api_keys": {"id", "name", "key_hash", "key_prefix", "rate_limit_per_minute", "cache_enabled",
                 "cache_ttl_seconds", "created_at", "last_used_at", "revoked_at"},
    "model_pricing": {"id", "model", "provider", "input_per_million", "output_per_million",
                      "cached_input_per_million", "cache_write_per_million", "effective_from"},
    "gateway_logs": {"request_id", "api_key_id", "endpoint", "model", "model_served", "provider",
                     "original_provider", "status_code", "prompt_tokens", "completion_tokens", "total_tokens",
                     "cost_usd", "latency_ms", "cache_hit", "failover_used", "error_message", "customer_id",
                     "feature", "end_user", "created_at", "attempts", "cached_tokens", "saved_usd", "stream",
                     "request_body", "response_body"},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request, sqlite_url):
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("pg_url")


def test_schema_is_the_same_on_both_databases(migrated_url):
    engine = make_engine(migrated_url)
    insp = inspect(engine)
    for table, columns in EXPECTED_COLUMNS.items():
        assert {c["name"] for c in insp.get_columns(table)} == columns
    unique = {tuple(u["column_names"]) for u in insp.get_unique_constraints("api_keys")}
    assert ("key_hash",) in unique
    # One index on the log table besides its key, the one its readers use: every index is written on every request.
    assert log_indexes(engine) == {("created_at",)}
    assert insp.get_pk_constraint("gateway_logs")["constrained_columns"] == ["request_id"]
    assert is_current(engine, migrated_url)


def test_the_log_index_is_brin_on_postgresql(pg_url):
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        definition = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = 'gateway_logs' "
                                       "AND indexname = 'ix_gateway_logs_created_at'")).scalar_one()
    assert "USING brin (created_at)" in definition


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    from gateway import config
    from tests.conftest import fresh_database
    with fresh_database("gateway_migrate") as raw:
        yield config.database_url(raw)


def test_upgrading_a_database_with_logs_keeps_them_and_the_report_still_reads_them(empty_url):
    upgrade(empty_url, "0001")
    engine = make_engine(empty_url)
    old_indexes = {i["name"] for i in inspect(engine).get_indexes("gateway_logs")}
    assert "ix_gateway_logs_key_created" in old_indexes  # the starting point is the old schema
    rows = [normalize(log_row(model=m)) for m in ("gpt-4o", "gpt-4o", "claude-haiku-4-5")]
    assert insert_ignoring_duplicates(engine, rows) == 3
    engine.dispose()

    upgrade(empty_url)
    engine = make_engine(empty_url)
    assert log_indexes(engine) == {("created_at",)}
    by_model = {r["model"]: r["requests"] for r in report(engine, since=dt.timedelta(days=7), by="model")}
    assert by_model == {"gpt-4o": 2, "claude-haiku-4-5": 1}

    downgrade_to(empty_url, "0001")
    engine = make_engine(empty_url)
    assert {i["name"] for i in inspect(engine).get_indexes("gateway_logs")} == old_indexes
    engine.dispose()


def test_the_log_key_becomes_request_id_and_back_with_the_rows_kept(empty_url):
    upgrade(empty_url, "0002")
    engine = make_engine(empty_url)
    old = [log_row(f"req_{n:04d}", model=f"m{n}") for n in range(5)]
    with engine.begin() as conn:  # rows as 0002 stored them, each with its serial id
        conn.execute(text("INSERT INTO gateway_logs (request_id, endpoint, model, status_code, cache_hit, "
                          "failover_used, stream, created_at) VALUES (:request_id, :endpoint, :model, "
                          ":status_code, false, false, false, :created_at)"), old)
    engine.dispose()

    upgrade(empty_url)
    engine = make_engine(empty_url)
    insp = inspect(engine)
    assert "id" not in {c["name"] for c in insp.get_columns("gateway_logs")}
    assert insp.get_pk_constraint("gateway_logs")["constrained_columns"] == ["request_id"]
    assert log_indexes(engine) == {("created_at",)}
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT request_id, model FROM gateway_logs")).all()) == {
            r["request_id"]: r["model"] for r in old}
    # a replayed row is still skipped, now by the primary key
    assert insert_ignoring_duplicates(engine, [normalize(log_row("req_0001")), normalize(log_row("req_0099"))]) == 1
    engine.dispose()

    downgrade_to(empty_url, "0002")
    engine = make_engine(empty_url)
    insp = inspect(engine)
    assert insp.get_pk_constraint("gateway_logs")["constrained_columns"] == ["id"]
    assert ("request_id",) in {tuple(u["column_names"]) for u in insp.get_unique_constraints("gateway_logs")}
    with engine.begin() as conn:
        ids = dict(conn.execute(text("SELECT request_id, id FROM gateway_logs")).all())
        assert len(ids) == 6 and len(set(ids.values())) == 6 and None not in ids.values()
        conn.execute(text("INSERT INTO gateway_logs (request_id, endpoint, status_code, cache_hit, failover_used, "
                          "stream, created_at) VALUES ('req_new', '/v1/x', 200, false, false, false, "
                          "CURRENT_TIMESTAMP)"))  # a new row gets an id of its own again
        new_id = conn.execute(text("SELECT id FROM gateway_logs WHERE request_id = 'req_new'")).scalar_one()
    assert new_id not in ids.values()
    engine.dispose()


def test_prices_are_seeded_as_exact_decimals(migrated_url):
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        rows = {r.model: r for r in conn.execute(select(model_pricing))}
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "gpt-4.1", "gpt-4.1-mini",
                  "gpt-4.1-nano", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5",
                  "claude-3-5-sonnet", "claude-3-5-haiku", "gemini-2.5-pro", "gemini-2.5-flash",
                  "gemini-2.0-flash"):
        assert model in rows, model
    assert Decimal(rows["gpt-4o-mini"].input_per_million) == Decimal("0.15")
    assert Decimal(rows["gpt-4o-mini"].cached_input_per_million) == Decimal("0.075")
    assert Decimal(rows["claude-sonnet-4-5"].output_per_million) == Decimal("15")
    assert rows["gemini-2.5-flash"].provider == "gemini"


def test_every_routed_model_has_a_price(migrated_url):
    from gateway import config
    from gateway.providers.registry import Registry
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        priced = {r.model for r in conn.execute(select(model_pricing.c.model))}
    routed = set(Registry(config.load({})).models)
    assert routed <= priced, routed - priced


def test_upgrade_twice_is_harmless(sqlite_url):
    upgrade(sqlite_url)
    assert is_current(make_engine(sqlite_url), sqlite_url)
