"""API keys, model prices (seeded with list prices), request logs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
TS = sa.DateTime(timezone=True)
PRICE = sa.Numeric(18, 6)

# Public list prices, USD per 1M tokens, as of 2026-11-26:
# (model, provider, input, output, cached input, cache write)
PRICES = [
    ("gpt-4o", "openai", "2.50", "10.00", "1.25", None),
    ("gpt-4o-mini", "openai", "0.15", "0.60", "0.075", None),
    ("gpt-4-turbo", "openai", "10.00", "30.00", None, None),
    ("gpt-4", "openai", "30.00", "60.00", None, None),
    ("gpt-3.5-turbo", "openai", "0.50", "1.50", None, None),
    ("gpt-4.1", "openai", "2.00", "8.00", "0.50", None),
    ("gpt-4.1-mini", "openai", "0.40", "1.60", "0.10", None),
    ("gpt-4.1-nano", "openai", "0.10", "0.40", "0.025", None),
    ("claude-opus-4-5", "anthropic", "5.00", "25.00", "0.50", "6.25"),
    ("claude-opus-4-5-20251101", "anthropic", "5.00", "25.00", "0.50", "6.25"),
    ("claude-sonnet-4-5", "anthropic", "3.00", "15.00", "0.30", "3.75"),
    ("claude-sonnet-4-5-20250929", "anthropic", "3.00", "15.00", "0.30", "3.75"),
    ("claude-haiku-4-5", "anthropic", "1.00", "5.00", "0.10", "1.25"),
    ("claude-haiku-4-5-20251001", "anthropic", "1.00", "5.00", "0.10", "1.25"),
    ("claude-3-5-sonnet", "anthropic", "3.00", "15.00", "0.30", "3.75"),
    ("claude-3-5-sonnet-20241022", "anthropic", "3.00", "15.00", "0.30", "3.75"),
    ("claude-3-5-haiku", "anthropic", "0.80", "4.00", "0.08", "1.00"),
    ("claude-3-5-haiku-20241022", "anthropic", "0.80", "4.00", "0.08", "1.00"),
    ("gemini-2.5-pro", "gemini", "1.25", "10.00", "0.125", None),
    ("gemini-2.5-flash", "gemini", "0.30", "2.50", "0.03", None),
    ("gemini-2.0-flash", "gemini", "0.10", "0.40", "0.025", None),
]
EFFECTIVE = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)


def upgrade():
    op.create_table(
        "api_keys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
        sa.Column("cache_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("cache_ttl_seconds", sa.Integer, nullable=False, server_default="3600"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_key_prefix", "api_keys", ["key_prefix"])

    pricing = op.create_table(
        "model_pricing",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("input_per_million", PRICE, nullable=False),
        sa.Column("output_per_million", PRICE, nullable=False),
        sa.Column("cached_input_per_million", PRICE, nullable=True),
        sa.Column("cache_write_per_million", PRICE, nullable=True),
        sa.Column("effective_from", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_pricing"),
    )
    op.create_index("ix_model_pricing_model_effective", "model_pricing", ["model", "effective_from"])

    op.create_table(
        "gateway_logs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.BigInteger, nullable=True),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("model_served", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(100), nullable=True),
        sa.Column("original_provider", sa.String(100), nullable=True),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=True),
        sa.Column("completion_tokens", sa.Integer, nullable=True),
        sa.Column("total_tokens", sa.Integer, nullable=True),
        sa.Column("cost_usd", sa.Numeric(18, 8), nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=True),
        sa.Column("cache_hit", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("failover_used", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("attempts", sa.Text, nullable=True),
        sa.Column("cached_tokens", sa.Integer, nullable=True),
        sa.Column("saved_usd", sa.Numeric(18, 8), nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("request_body", sa.Text, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.Column("customer_id", sa.String(200), nullable=True),
        sa.Column("feature", sa.String(200), nullable=True),
        sa.Column("end_user", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_logs"),
        sa.UniqueConstraint("request_id", name="uq_gateway_logs_request_id"),
    )
    op.create_index("ix_gateway_logs_created_at", "gateway_logs", ["created_at"])
    op.create_index("ix_gateway_logs_key_created", "gateway_logs", ["api_key_id", "created_at"])
    op.create_index("ix_gateway_logs_model_created", "gateway_logs", ["model", "created_at"])

    op.bulk_insert(pricing, [
        {"model": m, "provider": p, "input_per_million": Decimal(i), "output_per_million": Decimal(o),
         "cached_input_per_million": Decimal(c) if c else None,
         "cache_write_per_million": Decimal(w) if w else None, "effective_from": EFFECTIVE}
        for m, p, i, o, c, w in PRICES
    ])


def downgrade():
    op.drop_table("gateway_logs")
    op.drop_table("model_pricing")
    op.drop_table("api_keys")
