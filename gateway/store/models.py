"""The tables: API keys, model prices, request logs. Identical on PostgreSQL and SQLite."""
import datetime as dt

from sqlalchemy import (Boolean, Column, DateTime, Index, Integer, MetaData, Numeric, String, Text,
                        BigInteger)
from sqlalchemy.orm import declarative_base

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
})
Base = declarative_base(metadata=metadata)

# BigInteger ids autoincrement on SQLite only as INTEGER: keep them portable.
Id = BigInteger().with_variant(Integer, "sqlite")


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id = Column(Id, primary_key=True, autoincrement=True)
    name = Column(String(200), nullable=False)
    key_hash = Column(String(64), nullable=False, unique=True)
    key_prefix = Column(String(16), nullable=False, index=True)
    rate_limit_per_minute = Column(Integer, nullable=True)
    cache_enabled = Column(Boolean, nullable=False, default=True)
    cache_ttl_seconds = Column(Integer, nullable=False, default=3600)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_used_at = Column(DateTime(timezone=True), nullable=True)
    revoked_at = Column(DateTime(timezone=True), nullable=True)


class ModelPricing(Base):
    __tablename__ = "model_pricing"
    id = Column(Id, primary_key=True, autoincrement=True)
    model = Column(String(200), nullable=False)
    provider = Column(String(100), nullable=False)
    input_per_million = Column(Numeric(18, 6), nullable=False)
    output_per_million = Column(Numeric(18, 6), nullable=False)
    cached_input_per_million = Column(Numeric(18, 6), nullable=True)
    cache_write_per_million = Column(Numeric(18, 6), nullable=True)  # Anthropic prompt-cache writes
    effective_from = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    __table_args__ = (Index("ix_model_pricing_model_effective", "model", "effective_from"),)


class GatewayLog(Base):
    __tablename__ = "gateway_logs"
    id = Column(Id, primary_key=True, autoincrement=True)
    request_id = Column(String(64), nullable=False, unique=True)
    api_key_id = Column(BigInteger, nullable=True)
    endpoint = Column(String(100), nullable=False)
    model = Column(String(200), nullable=True)
    model_served = Column(String(200), nullable=True)
    provider = Column(String(100), nullable=True)
    original_provider = Column(String(100), nullable=True)
    status_code = Column(Integer, nullable=False)
    prompt_tokens = Column(Integer, nullable=True)
    completion_tokens = Column(Integer, nullable=True)
    total_tokens = Column(Integer, nullable=True)
    cost_usd = Column(Numeric(18, 8), nullable=True)
    latency_ms = Column(Integer, nullable=True)
    cache_hit = Column(Boolean, nullable=False, default=False)
    failover_used = Column(Boolean, nullable=False, default=False)
    error_message = Column(Text, nullable=True)
    attempts = Column(Text, nullable=True)  # JSON list of failed attempts: provider, model, reason
    cached_tokens = Column(Integer, nullable=True)
    saved_usd = Column(Numeric(18, 8), nullable=True)  # what a cache hit would have cost
    stream = Column(Boolean, nullable=False, default=False)
    request_body = Column(Text, nullable=True)  # only with GATEWAY_LOG_BODIES on
    response_body = Column(Text, nullable=True)
    customer_id = Column(String(200), nullable=True)
    feature = Column(String(200), nullable=True)
    end_user = Column(String(200), nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    __table_args__ = (
        Index("ix_gateway_logs_created_at", "created_at"),
        Index("ix_gateway_logs_key_created", "api_key_id", "created_at"),
        Index("ix_gateway_logs_model_created", "model", "created_at"),
    )
