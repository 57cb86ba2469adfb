"""Model prices: the `model_pricing` history, an in-memory price book, and the cost of a request.

Prices are USD per 1M tokens, kept as exact `Decimal`s end to end (no floats). A price change is a
new row, never an update, so every old log row stays explained by the price in force at its time.

Models are looked up by their exact name. There is no "dated id falls back to its alias" rule: dated
snapshots do not always cost what the alias costs (gpt-4o-2024-05-13 is 5.00/15.00, gpt-4o 2.50/10.00),
so a guess would misprice silently. Price by the registry's model name (the rows the migration seeds
match models.toml); a model without a row gets cost None and one warning per process.
"""
import bisect
import dataclasses
import datetime as dt
import decimal
import logging
import threading
import time
from decimal import Decimal

from sqlalchemy import select

from gateway.extensions import time_limit
from gateway.store.models import model_pricing, utcnow

log = logging.getLogger("gateway.pricing")

MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")  # gateway_logs.cost_usd is Numeric(18, 8)
PRICE_PLACES = Decimal("0.000001")   # model_pricing prices are Numeric(18, 6)
_RETRY_SECONDS = 5.0                 # after a failed load, the next attempt waits this long
_LOAD_TIMEOUT = 2.0                  # the first load is on a request's path: a hung database is a failed load
# Token counts × prices need more than the default 28 digits only in absurd cases; be safe anyway.
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)

# "No price for model X" is worth saying once per process, not once per request.
_warned_models = set()
_warned_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Price:
    id: int
    model: str
    provider: str
    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None
    cache_write_per_million: Decimal | None
    effective_from: dt.datetime


def _aware(value):
    # SQLite hands timestamps back naive; they were stored as UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _load_history(engine):
    """Every price row, grouped by model, oldest first: {model: ([effective_from, ...], [Price, ...])}.

    The whole table is read: it holds a few rows per model.
    """
    table = model_pricing
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.model, table.c.effective_from, table.c.id)).all()
    history = {}
    for row in rows:
        price = Price(row.id, row.model, row.provider, row.input_per_million, row.output_per_million,
                      row.cached_input_per_million, row.cache_write_per_million, _aware(row.effective_from))
        dates, prices = history.setdefault(row.model, ([], []))
        dates.append(price.effective_from)
        prices.append(price)
    return history


def _current(entry, now):
    """The latest row effective at `now` (a tie on effective_from goes to the newer id), or None."""
    dates, prices = entry
    i = bisect.bisect_right(dates, now)
    return prices[i - 1] if i else None


def _decimal(name, value, required=True):
    if value is None:
        if required:
            raise ValueError(f"{name} price is required")
        return None
    if isinstance(value, float):
        raise TypeError(f"{name} price must be a Decimal, int or string, not a float (floats are inexact)")
    try:
        price = Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise ValueError(f"{name} price {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"{name} price must be a non-negative number, got {value!r}")
    if price != price.quantize(PRICE_PLACES):
        raise ValueError(f"{name} price {value!r} has more than 6 decimal places")
    return price


def set_price(engine, model, provider, input, output, cached_input=None, cache_write=None,
              effective_from=None):
    """Add a price row (effective now unless told otherwise) and return its id. Old rows stay."""
    model, provider = (model or "").strip(), (provider or "").strip()
    if not model or not provider:
        raise ValueError("model and provider are required")
    values = dict(
        model=model, provider=provider,
        input_per_million=_decimal("input", input),
        output_per_million=_decimal("output", output),
        cached_input_per_million=_decimal("cached input", cached_input, required=False),
        cache_write_per_million=_decimal("cache write", cache_write, required=False),
        effective_from=(effective_from.astimezone(dt.timezone.utc) if effective_from else utcnow()))
    with engine.begin() as conn:
        result = conn.execute(model_pricing.insert().values(**values))
        return result.inserted_primary_key[0]


def list_prices(engine, now=None):
    """The price in force for each model (its latest row effective at `now`), ordered by model."""
    now = now or utcnow()
    history = _load_history(engine)
    current = (_current(entry, now) for entry in history.values())
    return sorted((p for p in current if p is not None), key=lambda p: p.model)


def cost_of(price, usage):
    """What `usage` (an OpenAI usage dict) costs at `price`, in USD to 8 places.

    cached_tokens and cache_write_tokens are subsets of prompt_tokens (the translators follow
    LiteLLM's convention, reference D.5), so they come off the plain-input part. reasoning_tokens
    are inside completion_tokens and cost the output price: nothing to add.
    """
    details = usage.get("prompt_tokens_details") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    if min(prompt, completion, cached, written) < 0:
        raise ValueError("negative token count")
    plain = max(prompt - cached - written, 0)
    cached_rate = price.cached_input_per_million
    write_rate = price.cache_write_per_million
    with decimal.localcontext(_CONTEXT):
        total = (plain * price.input_per_million
                 + cached * (price.input_per_million if cached_rate is None else cached_rate)
                 + written * (price.input_per_million if write_rate is None else write_rate)
                 + completion * price.output_per_million)
        return (total / MILLION).quantize(COST_PLACES, rounding=decimal.ROUND_HALF_UP)


class PriceBook:
    """Prices in memory: `price()` and `cost()` never query the database.

    The first use loads the table; after that a background thread reloads it when `refresh_seconds`
    have passed, while callers keep using the copy they have. A failed load is retried after a few
    seconds, never once per request.
    """

    def __init__(self, engine, refresh_seconds=60):
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self._history = None
        self._next_load = 0.0
        self._load_lock = threading.Lock()
        self._refreshing = False
        self._failures = 0

    def refresh(self):
        """Reload now, in the calling thread. Returns True on success."""
        try:
            with time_limit(self.engine, _LOAD_TIMEOUT):
                history = _load_history(self.engine)
        except Exception:  # noqa: BLE001 - the prices already loaded stay in use
            self._next_load = time.monotonic() + min(self.refresh_seconds, _RETRY_SECONDS)
            self._failures += 1
            # Said once per outage, with the cause; the retries after it are quiet.
            log.log(logging.WARNING if self._failures == 1 else logging.DEBUG,
                    "could not load model prices; will retry", exc_info=self._failures == 1)
            return False
        if self._failures:
            log.info("model prices loaded again")
        self._history = history
        self._failures = 0
        self._next_load = time.monotonic() + self.refresh_seconds
        return True

    def _ensure_fresh(self):
        if time.monotonic() < self._next_load:
            return
        if self._history is None:
            # Nothing to serve yet: load in this thread; concurrent callers wait for the one load.
            with self._load_lock:
                if self._history is None and time.monotonic() >= self._next_load:
                    self.refresh()
            return
        with self._load_lock:
            if self._refreshing or time.monotonic() < self._next_load:
                return
            self._refreshing = True
        try:
            threading.Thread(target=self._background_refresh, name="gateway-prices", daemon=True).start()
        except RuntimeError:  # cannot start a thread (interpreter shutting down): try again later
            self._refreshing = False

    def _background_refresh(self):
        try:
            self.refresh()
        finally:
            self._refreshing = False

    def price(self, model, now=None):
        """The price in force for `model` (exact name) at `now` (aware; default: now), or None."""
        self._ensure_fresh()
        history = self._history
        if history is None:
            return None  # the load failed and was logged; this is not the model's fault
        entry = history.get(model)
        price = _current(entry, now or utcnow()) if entry else None
        if price is None:
            _warn_once(model)
        return price

    def cost(self, model, usage):
        """The cost of `usage` (OpenAI's usage dict) on `model` as a Decimal, or None when unknown."""
        if usage is None:
            return None
        price = self.price(model)
        if price is None:
            return None
        try:
            return cost_of(price, usage)
        except (TypeError, ValueError, AttributeError):
            log.warning("unusable usage for model %s: %r", model, usage)
            return None


def _warn_once(model):
    with _warned_lock:
        if model in _warned_models:
            return
        _warned_models.add(model)
    log.warning("no price for model %r: its requests are logged with cost_usd NULL "
                "(add one with `gateway pricing set`)", model)
