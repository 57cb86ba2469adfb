"""Reports on a known data set. The PostgreSQL database is shared by the session, so each test puts
its rows in a far-past window of its own and reports on exactly that window (`until`)."""
import datetime as dt
import itertools
import secrets
from decimal import Decimal

import pytest
from sqlalchemy import event, text

from gateway.extensions import make_engine
from gateway.store.keys import create_key
from gateway.store.logs import insert_ignoring_duplicates, normalize
from gateway.store.logwriter import LogWriter
from gateway.store.report import GROUPS, format_table, parse_since, percentile_cont, report

UTC = dt.timezone.utc
_windows = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, sqlite_url):
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    if request.param == "postgresql":
        # A session time zone far from UTC: days must still be UTC days.
        event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.cursor().execute(
            "SET TIME ZONE 'Asia/Tokyo'"))
    yield engine
    engine.dispose()


def new_id():
    return "req_" + secrets.token_hex(12)


def row(created_at, **values):
    base = {"request_id": new_id(), "endpoint": "/v1/chat/completions", "status_code": 200,
            "created_at": created_at}
    return normalize({**base, **values})


@pytest.fixture
def dataset(engine):
    """Two days of rows: model alpha on day 1, model beta on day 2, plus rows just outside."""
    day1 = dt.datetime(1990, 1, 1, tzinfo=UTC) + dt.timedelta(days=10 * next(_windows))
    day2, until = day1 + dt.timedelta(days=1), day1 + dt.timedelta(days=2)
    _, key_id = create_key(engine, "report-test")
    rows = []
    # alpha: 21 requests, latencies 10..210 ms, 3 cache hits, 1 failover, the last one a 500.
    for i in range(21):
        failed = i == 20
        rows.append(row(
            day1 + dt.timedelta(minutes=i) if i else day1,  # the first one exactly at the window's start
            model="alpha", provider="openai", api_key_id=key_id, customer_id="acme", feature="chat",
            status_code=500 if failed else 200, latency_ms=10 * (i + 1),
            prompt_tokens=None if failed else 100, completion_tokens=None if failed else 10,
            total_tokens=None if failed else 110, cost_usd=None if failed else Decimal("0.00012345"),
            cache_hit=i < 3, failover_used=i == 5))
    rows.append(row(day2 - dt.timedelta(microseconds=1), model="alpha", provider="openai", api_key_id=key_id,
                    customer_id="acme", feature="chat", latency_ms=40, prompt_tokens=1, completion_tokens=1,
                    total_tokens=2, cost_usd=Decimal("0.00000001")))  # 23:59:59.999999: still day 1
    # beta: 4 requests on day 2.
    beta = dict(model="beta", provider="anthropic", feature="batch")
    rows += [
        row(day2, **beta, latency_ms=100, prompt_tokens=1000, completion_tokens=2000, total_tokens=3000,
            cost_usd=Decimal("0.5"), api_key_id=10 ** 12),  # a key that no longer exists
        row(day2 + dt.timedelta(hours=1), **beta, latency_ms=300, status_code=429, failover_used=True),
        row(day2 + dt.timedelta(hours=2), **beta, prompt_tokens=1000, completion_tokens=2000, total_tokens=3000,
            cost_usd=Decimal("0"), cache_hit=True),
        row(day2 + dt.timedelta(hours=23, minutes=59), **beta, prompt_tokens=5, completion_tokens=5,
            total_tokens=10),  # no price for its model: cost NULL
    ]
    # Outside [until - 2 days, until): never counted.
    rows.append(row(until, model="alpha", provider="openai", cost_usd=Decimal("9"), latency_ms=1))
    rows.append(row(day1 - dt.timedelta(microseconds=1), model="beta", cost_usd=Decimal("9"), latency_ms=1))
    insert_ignoring_duplicates(engine, rows)
    return {"until": until, "day1": day1.date(), "day2": day2.date(), "key_id": key_id}


ALPHA = {
    "requests": 22, "prompt_tokens": 20 * 100 + 1, "completion_tokens": 20 * 10 + 1,
    "total_tokens": 20 * 110 + 2, "spend_usd": Decimal("0.00246901"),  # 20 × 0.00012345 + 0.00000001
    "avg_latency_ms": (sum(10 * (i + 1) for i in range(21)) + 40) / 22,
    # sorted: 10, 20, 30, 40, 40, 50 ... 210 → positions 10.5 and 19.95
    "p50_latency_ms": 100.0 + (110.0 - 100.0) * 0.5,
    "p95_latency_ms": 190.0 + (200.0 - 190.0) * (0.95 * 21 - 19),
    "cache_hit_rate": 3 / 22, "failover_rate": 1 / 22, "error_rate": 1 / 22,
    "cache_hits": 3, "failovers": 1, "errors": 1, "unpriced_requests": 0,
}
BETA = {
    "requests": 4, "prompt_tokens": 2005, "completion_tokens": 4005, "total_tokens": 6010,
    "spend_usd": Decimal("0.5"), "avg_latency_ms": 200.0,
    "p50_latency_ms": 200.0, "p95_latency_ms": 290.0,  # latencies 100 and 300; NULLs ignored
    "cache_hit_rate": 0.25, "failover_rate": 0.25, "error_rate": 0.25,
    "cache_hits": 1, "failovers": 1, "errors": 1, "unpriced_requests": 1,
}


def test_by_model_every_figure(engine, dataset):
    rows = report(engine, dt.timedelta(days=2), "model", until=dataset["until"])
    assert rows == [{"model": "beta", **BETA}, {"model": "alpha", **ALPHA}]  # most spend first
    assert all(isinstance(r["spend_usd"], Decimal) for r in rows)
    assert rows[1]["p95_latency_ms"] == pytest.approx(199.5)
    assert rows[1]["avg_latency_ms"] == pytest.approx(2350 / 22)


def test_by_provider_customer_and_feature(engine, dataset):
    until = dataset["until"]
    assert report(engine, "2d", "provider", until=until) == [
        {"provider": "anthropic", **BETA}, {"provider": "openai", **ALPHA}]
    assert report(engine, "2d", "customer", until=until) == [
        {"customer": None, **BETA}, {"customer": "acme", **ALPHA}]
    assert report(engine, "2d", "feature", until=until) == [
        {"feature": "batch", **BETA}, {"feature": "chat", **ALPHA}]


def test_by_key_names_the_key(engine, dataset):
    rows = report(engine, dt.timedelta(days=2), "key", until=dataset["until"])
    by_key = {r["key"]: r for r in rows}
    alpha = by_key[dataset["key_id"]]
    assert (alpha["key_name"], alpha["key_prefix"][:3], alpha["requests"]) == ("report-test", "gw_", 22)
    assert {k: alpha[k] for k in ALPHA} == ALPHA
    deleted = by_key[10 ** 12]
    assert (deleted["key_name"], deleted["requests"], deleted["spend_usd"]) == (None, 1, Decimal("0.5"))
    nokey = by_key[None]
    assert (nokey["requests"], nokey["spend_usd"], nokey["p50_latency_ms"], nokey["p95_latency_ms"]) == (
        3, Decimal("0"), 300.0, 300.0)
    assert nokey["avg_latency_ms"] == 300.0 and nokey["unpriced_requests"] == 1


def test_by_day_in_utc(engine, dataset):
    rows = report(engine, dt.timedelta(days=2), "day", until=dataset["until"])
    assert rows == [{"day": dataset["day1"], **ALPHA}, {"day": dataset["day2"], **BETA}]


def test_the_window_is_since_before_until(engine, dataset):
    one_day = report(engine, dt.timedelta(days=1), "model", until=dataset["until"])
    assert one_day == [{"model": "beta", **BETA}]
    assert report(engine, "30m", "model", until=dataset["until"] - dt.timedelta(hours=12)) == []


def test_the_docs_query_runs_on_rows_the_writer_wrote(request, tmp_path):
    """The product docs' query, as written, against PostgreSQL rows from the log writer."""
    pg = make_engine(request.getfixturevalue("pg_url"))
    model = f"docs-model-{secrets.token_hex(4)}"
    writer = LogWriter(pg, str(tmp_path / "spool"))
    now = dt.datetime.now(UTC)
    for cost, latency in (("0.001", 100), ("0.002", 200), ("0.00000001", 600)):
        writer.enqueue({"request_id": new_id(), "endpoint": "/v1/chat/completions", "model": model,
                        "provider": "openai", "status_code": 200, "cost_usd": Decimal(cost),
                        "latency_ms": latency, "created_at": now})
    writer.enqueue({"request_id": new_id(), "endpoint": "/v1/chat/completions", "model": model,
                    "status_code": 200, "cost_usd": Decimal("5"), "created_at": now - dt.timedelta(days=8)})
    assert writer.stop(10) and writer.written == 4 and writer.dropped == 0

    with pg.connect() as conn:
        result = conn.execute(text(
            "SELECT model, COUNT(*), SUM(cost_usd), AVG(latency_ms) FROM gateway_logs "
            "WHERE created_at >= NOW() - INTERVAL '7 days' GROUP BY model;")).all()
    ours = {r[0]: r[1:] for r in result}[model]
    assert ours == (3, Decimal("0.00300001"), Decimal(300))

    [mine] = [r for r in report(pg, "7d", "model") if r["model"] == model]
    assert (mine["requests"], mine["spend_usd"], mine["avg_latency_ms"]) == (3, Decimal("0.00300001"), 300.0)
    pg.dispose()


# --- parsing and formatting -------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("7d", dt.timedelta(days=7)), ("24h", dt.timedelta(hours=24)), ("30m", dt.timedelta(minutes=30)),
    ("2w", dt.timedelta(weeks=2)), (" 12H ", dt.timedelta(hours=12)),
])
def test_parse_since(value, expected):
    assert parse_since(value) == expected


@pytest.mark.parametrize("value", ["", "7", "d", "7x", "-1d", "1.5h", "7 days", None])
def test_parse_since_refuses_other_forms(value):
    with pytest.raises(ValueError, match=r"e\.g\. 30m, 24h, 7d"):
        parse_since(value)


def test_parse_since_refuses_zero():
    with pytest.raises(ValueError, match="greater than zero"):
        parse_since("0h")


def test_report_refuses_an_unknown_grouping(sqlite_url):
    with pytest.raises(ValueError, match="model, provider, key, customer, feature, day"):
        report(make_engine(sqlite_url), "7d", "colour")
    assert GROUPS == ("model", "provider", "key", "customer", "feature", "day")


def test_percentile_cont_matches_postgresql_definition():
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7], 0.95) == 7.0
    assert percentile_cont([1, 2, 3, 4], 0.5) == 2.5
    assert percentile_cont([100, 300], 0.95) == 290.0


def test_format_table(engine, dataset):
    rows = report(engine, "2d", "model", until=dataset["until"])
    table = format_table(rows, "model")
    lines = table.splitlines()
    assert lines[0].split() == ["model", "requests", "prompt", "tok", "compl.", "tok", "total", "tok",
                                "spend", "USD", "avg", "ms", "p50", "ms", "p95", "ms", "cache", "failover",
                                "errors"]
    assert lines[2].split() == ["beta", "4", "2,005", "4,005", "6,010", "0.500000", "200", "200", "290",
                                "25.0%", "25.0%", "25.0%"]
    assert lines[3].split() == ["alpha", "22", "2,001", "201", "2,202", "0.002469", "107", "105", "200",
                                "13.6%", "4.5%", "4.5%"]
    assert lines[5].split() == ["TOTAL", "26", "4,006", "4,206", "8,212", "0.502469", "15.4%", "7.7%", "7.7%"]
    assert "1 successful request(s) had no price" in table
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule line up


def test_format_table_labels_keys_and_empty_reports(engine, dataset):
    table = format_table(report(engine, "2d", "key", until=dataset["until"]), "key")
    assert "report-test (gw_" in table and "(no key)" in table and f"#{10 ** 12} (deleted)" in table
    assert format_table([], "model") == "No requests in this period."


def test_a_request_with_no_tokens_is_no_unpriced_answer(engine):
    # GET /v1/models, which the OpenAI SDK and LangChain send on their own: it was counted as "a successful
    # request with no price for its model", a warning for nothing.
    day = dt.datetime(1990, 1, 1, tzinfo=UTC) + dt.timedelta(days=10 * next(_windows))
    insert_ignoring_duplicates(engine, [row(day, endpoint="/v1/models", latency_ms=1),
                                        row(day, model="gamma", prompt_tokens=5, completion_tokens=5,
                                            total_tokens=10, latency_ms=2)])
    rows = {r["model"]: r for r in report(engine, "1d", "model", until=day + dt.timedelta(hours=1))}
    assert (rows[None]["requests"], rows[None]["unpriced_requests"]) == (1, 0)
    assert rows["gamma"]["unpriced_requests"] == 1
