import datetime as dt
import logging
import secrets
import time
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select

from gateway.extensions import make_engine
from gateway.store import pricing
from gateway.store.models import model_pricing
from gateway.store.pricing import PriceBook, list_prices, set_price
from gateway.translate.anthropic import from_anthropic
from gateway.translate.gemini import from_gemini
from tests.conftest import free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, sqlite_url):
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


def unique_model():
    return f"test-model-{secrets.token_hex(6)}"


class QueryCounter:
    def __init__(self, engine):
        self.statements = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        self.statements.append(statement)

    def __len__(self):
        return len(self.statements)


def openai_usage(prompt, completion, cached=0, reasoning=0):
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


# List prices (reference section E), USD per 1M tokens: input, output, cached input, cache write.
LIST = {
    "gpt-4o": ("openai", "2.50", "10.00", "1.25", None),
    "gpt-4o-mini": ("openai", "0.15", "0.60", "0.075", None),
    "gpt-4-turbo": ("openai", "10.00", "30.00", None, None),
    "gpt-4.1-nano": ("openai", "0.10", "0.40", "0.025", None),
    "claude-sonnet-4-5-20250929": ("anthropic", "3.00", "15.00", "0.30", "3.75"),
    "claude-haiku-4-5": ("anthropic", "1.00", "5.00", "0.10", "1.25"),
    "claude-opus-4-5": ("anthropic", "5.00", "25.00", "0.50", "6.25"),
    "gemini-2.5-flash": ("gemini", "0.30", "2.50", "0.03", None),
    "gemini-2.5-pro": ("gemini", "1.25", "10.00", "0.125", None),
}


def own_copy(engine, model):
    """A price row of this test's own with `model`'s list price: the seeded rows of the shared
    PostgreSQL database may be repriced by other tests, this one is not."""
    name = f"{model}-test-{secrets.token_hex(4)}"
    provider, *prices = LIST[model]
    set_price(engine, name, provider, *prices)
    return name


# --- the seed ---------------------------------------------------------------------------------

def test_the_migration_seeds_the_list_prices(sqlite_url):
    engine = make_engine(sqlite_url)  # a fresh database: nobody has repriced anything
    seeded = {p.model: p for p in list_prices(engine)}
    for model, (provider, *prices) in LIST.items():
        p = seeded[model]
        assert (p.provider, p.input_per_million, p.output_per_million, p.cached_input_per_million,
                p.cache_write_per_million) == (provider, *(Decimal(x) if x else None for x in prices)), model
    # dated and undated Anthropic ids are both seeded, each under its exact name
    assert seeded["claude-haiku-4-5-20251001"].input_per_million == Decimal("1.00")
    assert PriceBook(engine).cost("gpt-4o-mini", openai_usage(1_000_000, 0)) == Decimal("0.15")
    engine.dispose()


# --- arithmetic -------------------------------------------------------------------------------

def test_a_million_input_tokens_cost_the_list_price_exactly(engine):
    model = own_copy(engine, "gpt-4o-mini")
    book = PriceBook(engine)
    cost = book.cost(model, openai_usage(1_000_000, 0))
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.15")
    assert cost.as_tuple().exponent == -8
    assert book.cost(model, openai_usage(0, 1_000_000)) == Decimal("0.60")


def test_openai_cached_tokens_are_charged_at_the_cached_price(engine):
    # gpt-4o: 2.50 input, 1.25 cached, 10.00 output. 86 plain + 1920 cached + 300 out.
    usage = openai_usage(2006, 300, cached=1920)
    assert PriceBook(engine).cost(own_copy(engine, "gpt-4o"), usage) == Decimal("0.00561500")


def test_a_model_without_a_cached_price_charges_cached_tokens_as_input(engine):
    # gpt-4-turbo has no cached price: all 1000 prompt tokens at 10.00.
    model = own_copy(engine, "gpt-4-turbo")
    assert PriceBook(engine).cost(model, openai_usage(1000, 0, cached=500)) == Decimal("0.01")


def test_anthropic_cache_reads_and_writes_from_the_translated_usage(engine):
    body = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 50, "cache_creation_input_tokens": 1000,
                      "cache_read_input_tokens": 2000, "output_tokens": 300}}
    usage = from_anthropic(body, "claude-sonnet-4-5-20250929", "chatcmpl-1", 0)["usage"]
    assert usage["prompt_tokens"] == 3050  # the translator counts both cache counters in prompt_tokens
    # 50 × 3.00 + 2000 × 0.30 (read) + 1000 × 3.75 (write) + 300 × 15.00 = 9000 per million
    model = own_copy(engine, "claude-sonnet-4-5-20250929")
    assert PriceBook(engine).cost(model, usage) == Decimal("0.009")


def test_anthropic_usage_literal(engine):
    usage = {"prompt_tokens": 12_345, "completion_tokens": 678, "total_tokens": 13_023,
             "prompt_tokens_details": {"cached_tokens": 10_000, "cache_write_tokens": 2000},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    # haiku 4.5: 345 × 1.00 + 10000 × 0.10 + 2000 × 1.25 + 678 × 5.00 = 7235 per million
    assert PriceBook(engine).cost(own_copy(engine, "claude-haiku-4-5"), usage) == Decimal("0.007235")


def test_gemini_reasoning_tokens_are_output_tokens_counted_once(engine):
    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 400, "thoughtsTokenCount": 600,
                              "cachedContentTokenCount": 1000, "totalTokenCount": 2200},
            "modelVersion": "gemini-2.5-flash"}
    usage = from_gemini(body, "gemini-2.5-flash", "chatcmpl-2", 0)["usage"]
    assert (usage["completion_tokens"], usage["completion_tokens_details"]["reasoning_tokens"]) == (1000, 600)
    # 200 × 0.30 + 1000 × 0.03 (cached) + 1000 × 2.50 (400 text + 600 thoughts) = 2590 per million
    assert PriceBook(engine).cost(own_copy(engine, "gemini-2.5-flash"), usage) == Decimal("0.00259")


def test_rounding_is_half_up_to_eight_places(engine):
    # One cached gpt-4.1-nano token: 0.025 / 1e6 = 0.000000025 → 0.00000003 (half-even would say ...02).
    model = own_copy(engine, "gpt-4.1-nano")
    assert PriceBook(engine).cost(model, openai_usage(1, 0, cached=1)) == Decimal("0.00000003")


def test_no_usage_means_no_cost(engine):
    assert PriceBook(engine).cost("gpt-4o", None) is None


def test_garbage_usage_is_no_cost_not_a_crash(engine):
    assert PriceBook(engine).cost("gpt-4o", {"prompt_tokens": "lots"}) is None
    assert PriceBook(engine).cost("gpt-4o", {"prompt_tokens": -5}) is None


# --- unknown models ---------------------------------------------------------------------------

def test_an_unknown_model_has_no_cost_and_one_warning(engine, caplog):
    model = unique_model()
    book = PriceBook(engine)
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        for _ in range(5):
            assert book.cost(model, openai_usage(10, 10)) is None
        assert PriceBook(engine).price(model) is None  # once per process, not per book
    warnings = [r for r in caplog.records if model in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_a_dated_id_does_not_borrow_its_alias_price(engine):
    model = unique_model()
    set_price(engine, model, "anthropic", "1", "5")
    book = PriceBook(engine)
    assert book.price(model).model == model
    # gpt-4o-2024-05-13 costs 5.00 where gpt-4o costs 2.50: a dated id is priced only by a row of its own
    assert book.price(f"{model}-20250101") is None


# --- history ----------------------------------------------------------------------------------

def test_set_price_adds_a_current_row_and_keeps_the_old_one(engine):
    model = unique_model()
    first = set_price(engine, model, "openai", "1.00", "2.00")
    book = PriceBook(engine)
    assert book.price(model).input_per_million == Decimal("1.00")
    second = set_price(engine, model, "openai", Decimal("1.50"), 3, cached_input="0.75", cache_write="1.875")
    assert second != first

    with engine.connect() as conn:
        rows = conn.execute(select(model_pricing).where(model_pricing.c.model == model)
                            .order_by(model_pricing.c.id)).all()
    assert [(r.id, r.input_per_million) for r in rows] == [(first, Decimal("1.00")), (second, Decimal("1.50"))]

    current = {p.model: p for p in list_prices(engine)}[model]
    assert (current.id, current.provider, current.input_per_million, current.output_per_million,
            current.cached_input_per_million, current.cache_write_per_million) == (
        second, "openai", Decimal("1.50"), Decimal("3"), Decimal("0.75"), Decimal("1.875"))
    assert current.effective_from.tzinfo is not None
    assert abs(current.effective_from - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)

    assert book.price(model).id == first  # cached until refreshed
    assert book.refresh()
    assert book.price(model).id == second
    # usage at the new price: 1000 plain × 1.50 + 1000 × 3
    assert book.cost(model, openai_usage(1000, 1000)) == Decimal("0.0045")


def test_list_prices_has_one_current_row_per_model(engine):
    model = unique_model()
    old = set_price(engine, model, "gemini", "1", "2")
    new = set_price(engine, model, "gemini", "3", "4")
    prices = list_prices(engine)
    names = [p.model for p in prices]
    assert len(names) == len(set(names)) and names == sorted(names)
    assert {p.model: p.id for p in prices}[model] == new != old
    assert {"gpt-4o", "claude-haiku-4-5-20251001", "gemini-2.5-pro"} <= set(names)


def test_a_future_price_waits_for_its_time(engine):
    model = unique_model()
    now = dt.datetime.now(dt.timezone.utc)
    set_price(engine, model, "anthropic", "1", "2")
    set_price(engine, model, "anthropic", "9", "9", effective_from=now + dt.timedelta(hours=1))
    book = PriceBook(engine)
    assert book.price(model).input_per_million == Decimal("1")
    assert book.price(model, now=now + dt.timedelta(hours=2)).input_per_million == Decimal("9")
    assert {p.model: p for p in list_prices(engine)}[model].input_per_million == Decimal("1")


@pytest.mark.parametrize("kwargs, error", [
    ({"input": 0.15}, TypeError),
    ({"input": "-1"}, ValueError),
    ({"input": "abc"}, ValueError),
    ({"input": "0.0000001"}, ValueError),
    ({"cached_input": "NaN"}, ValueError),
    ({"model": " "}, ValueError),
])
def test_set_price_refuses_bad_values(engine, kwargs, error):
    args = {"model": unique_model(), "provider": "openai", "input": "1", "output": "2", **kwargs}
    with pytest.raises(error):
        set_price(engine, **args)


# --- no query per request ---------------------------------------------------------------------

def test_costs_are_computed_without_querying_the_database(engine):
    book = PriceBook(engine, refresh_seconds=60)
    queries = QueryCounter(engine)
    book.cost("gpt-4o", openai_usage(10, 10))
    loaded = len(queries)
    assert loaded >= 1
    for _ in range(1000):
        book.cost("gpt-4o", openai_usage(10, 10, cached=5))
        book.price("claude-haiku-4-5")
        book.cost(unique_model(), openai_usage(1, 1))
    assert len(queries) == loaded


def test_prices_refresh_in_the_background(engine):
    model = unique_model()
    set_price(engine, model, "openai", "1", "1")
    book = PriceBook(engine, refresh_seconds=0.2)
    assert book.price(model).input_per_million == Decimal("1")
    set_price(engine, model, "openai", "2", "2")
    queries = QueryCounter(engine)
    start = time.monotonic()
    while book.price(model).input_per_million != Decimal("2"):
        assert time.monotonic() - start < 5, "the price book never picked up the new price"
        time.sleep(0.001)
    # about one reload per 0.2 s, however often prices are read
    assert len(queries) <= 2 + 2 * (time.monotonic() - start) / 0.2


def test_an_unreachable_database_is_not_queried_per_request(caplog):
    engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing")
    connects = []
    event.listen(engine, "do_connect", lambda *a: connects.append(1))
    book = PriceBook(engine, refresh_seconds=60)
    model = unique_model()
    with caplog.at_level(logging.WARNING, logger="gateway.pricing"):
        for _ in range(50):
            assert book.cost(model, openai_usage(10, 10)) is None
    assert len(connects) == 1
    assert any("could not load model prices" in r.getMessage() for r in caplog.records)
    assert not any(model in r.getMessage() for r in caplog.records)  # not the model's fault
    assert model not in pricing._warned_models


def test_counting_queries_sees_the_load(engine):
    # Guards the test above: the listener does see the price book's query.
    queries = QueryCounter(engine)
    PriceBook(engine).price("gpt-4o")
    assert any("model_pricing" in s for s in queries.statements)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(model_pricing)).scalar() >= 21
