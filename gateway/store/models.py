"""The tables: API keys, model prices, request logs. Identical on PostgreSQL and SQLite.

SQLAlchemy Core tables: the gateway reads and writes them with Core statements only, and the ORM would
add ~6 MB to every worker for nothing (it is never imported in a worker)."""
import datetime as dt

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, Numeric, String, Table,
                        Text)

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
})

# BigInteger ids autoincrement on SQLite only as INTEGER: keep them portable.
Id = BigInteger().with_variant(Integer, "sqlite")


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


api_keys = Table(
    "api_keys", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False, index=True),
    Column("rate_limit_per_minute", Integer, nullable=True),
    Column("cache_enabled", Boolean, nullable=False, default=True),
    Column("cache_ttl_seconds", Integer, nullable=False, default=3600),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


model_pricing = Table(
    "model_pricing", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("provider", String(100), nullable=False),
    Column("input_per_million", Numeric(18, 6), nullable=False),
    Column("output_per_million", Numeric(18, 6), nullable=False),
    Column("cached_input_per_million", Numeric(18, 6), nullable=True),
    Column("cache_write_per_million", Numeric(18, 6), nullable=True),  # Anthropic prompt-cache writes
    Column("effective_from", DateTime(timezone=True), nullable=False, default=utcnow),
    Index("ix_model_pricing_model_effective", "model", "effective_from"),
)


gateway_logs = Table(
    "gateway_logs", metadata,
    # The key is the id the client was given (X-Request-Id); no serial id: alembic/versions/0003_log_request_id_key.py
    Column("request_id", String(64), primary_key=True),
    Column("api_key_id", BigInteger, nullable=True),
    Column("endpoint", String(100), nullable=False),
    Column("model", String(200), nullable=True),
    Column("model_served", String(200), nullable=True),
    Column("provider", String(100), nullable=True),
    Column("original_provider", String(100), nullable=True),
    Column("status_code", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("total_tokens", Integer, nullable=True),
    Column("cost_usd", Numeric(18, 8), nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Column("cache_hit", Boolean, nullable=False, default=False),
    Column("failover_used", Boolean, nullable=False, default=False),
    Column("error_message", Text, nullable=True),
    Column("attempts", Text, nullable=True),  # JSON list of failed attempts: provider, model, reason
    Column("cached_tokens", Integer, nullable=True),
    Column("saved_usd", Numeric(18, 8), nullable=True),  # what a cache hit would have cost
    Column("stream", Boolean, nullable=False, default=False),
    Column("request_body", Text, nullable=True),  # only with GATEWAY_LOG_BODIES on
    Column("response_body", Text, nullable=True),
    Column("customer_id", String(200), nullable=True),
    Column("feature", String(200), nullable=True),
    Column("end_user", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    # The table is read by time and written on every request: one index (BRIN on PostgreSQL), see
    # alembic/versions/0002_log_indexes.py.
    Index("ix_gateway_logs_created_at", "created_at", postgresql_using="brin"),
)
