from decimal import Decimal

import pytest
from sqlalchemy import inspect, select

from gateway.extensions import make_engine
from gateway.store.migrate import is_current, upgrade
from gateway.store.models import model_pricing

EXPECTED_COLUMNS = {
    "api_keys": {"id", "name", "key_hash", "key_prefix", "rate_limit_per_minute", "cache_enabled",
                 "cache_ttl_seconds", "created_at", "last_used_at", "revoked_at"},
    "model_pricing": {"id", "model", "provider", "input_per_million", "output_per_million",
                      "cached_input_per_million", "cache_write_per_million", "effective_from"},
    "gateway_logs": {"id", "request_id", "api_key_id", "endpoint", "model", "model_served", "provider",
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
    log_indexes = {tuple(i["column_names"]) for i in insp.get_indexes("gateway_logs")}
    assert ("created_at",) in log_indexes and ("api_key_id", "created_at") in log_indexes
    assert is_current(engine, migrated_url)


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
