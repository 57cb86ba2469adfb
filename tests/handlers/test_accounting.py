"""Cost on every answer, and one log row for every /v1 request, whatever its outcome."""
import json
from decimal import Decimal

import pytest
import responses
from sqlalchemy import select

from gateway.store.models import gateway_logs
from tests.providers.wire import (ANTHROPIC_URL, OPENAI_URL, anthropic_message, anthropic_stream, openai_completion,
                                  openai_error)

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
SECRETS = ("sk-test-openai-SECRET", "sk-ant-test-SECRET", "AIza-test-SECRET")


@pytest.fixture(params=["sqlite", "postgresql"])
def gw(request, make_app):
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    app, key = make_app(database_url=url)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    client.gateway = app.extensions["gateway"]
    client.key = key
    return client


def rows(client, request_id):
    client.gateway.log_writer.flush(timeout=10)
    with client.gateway.engine.connect() as conn:
        return conn.execute(select(gateway_logs).where(gateway_logs.c.request_id == request_id)).all()


def the_row(client, resp):
    found = rows(client, resp.headers["X-Request-Id"])
    assert len(found) == 1
    return found[0]


@responses.activate
def test_cost_in_body_headers_and_row(gw):
    responses.post(OPENAI_URL, json=openai_completion())   # 9 prompt + 4 completion tokens
    resp = gw.post("/v1/chat/completions", json=BODY, headers={"X-Customer-Id": "acme", "X-Feature": "search",
                                                              "Cache-Control": "no-cache"})
    expected = (Decimal(9) * Decimal("0.15") + Decimal(4) * Decimal("0.60")) / Decimal(1_000_000)
    assert resp.headers["X-Cost-USD"] == str(expected.quantize(Decimal("0.000001")))
    body = resp.get_json()
    assert Decimal(str(body["cost_usd"])) == expected and isinstance(body["latency_ms"], int)
    row = the_row(gw, resp)
    assert Decimal(row.cost_usd) == expected
    assert (row.model, row.model_served, row.provider, row.status_code) == ("gpt-4o-mini", "gpt-4o-mini", "openai", 200)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (9, 4, 13)
    assert (row.customer_id, row.feature, row.cache_hit, row.failover_used) == ("acme", "search", False, False)
    assert row.api_key_id is not None and row.latency_ms >= 0


@responses.activate
def test_a_cache_hit_costs_nothing_and_records_what_it_saved(gw):
    responses.post(OPENAI_URL, json=openai_completion())
    gw.post("/v1/chat/completions", json=BODY)
    hit = gw.post("/v1/chat/completions", json=BODY)
    row = the_row(gw, hit)
    assert row.cache_hit is True and Decimal(row.cost_usd) == 0 and Decimal(row.saved_usd) > 0


@responses.activate
def test_a_failed_over_request_records_the_original_provider_and_attempts(gw):
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = gw.post("/v1/chat/completions", json=BODY, headers={"Cache-Control": "no-cache"})
    row = the_row(gw, resp)
    assert (row.failover_used, row.original_provider, row.provider) == (True, "openai", "anthropic")
    assert row.model_served == "claude-haiku-4-5-20251001"
    attempts = json.loads(row.attempts)
    assert [a["provider"] for a in attempts] == ["openai", "openai"]
    # Priced as the model that answered (Claude Haiku 4.5: $1 / $5), not the one asked for.
    assert Decimal(row.cost_usd) == (Decimal(9) * 1 + Decimal(5) * 5) / Decimal(1_000_000)


@responses.activate
def test_errors_and_refusals_leave_a_row_too(gw):
    responses.post(OPENAI_URL, json=openai_error(400, "bad request", "invalid_request_error"), status=400)
    bad = gw.post("/v1/chat/completions", json=BODY, headers={"Cache-Control": "no-cache"})
    invalid = gw.post("/v1/chat/completions", json={"model": "gpt-4o-mini"})
    anonymous = gw.post("/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer nope"})
    for resp, status in ((bad, 400), (invalid, 400), (anonymous, 401)):
        row = the_row(gw, resp)
        assert row.status_code == status and row.error_message
    assert the_row(gw, anonymous).api_key_id is None
    assert the_row(gw, invalid).model == "gpt-4o-mini"   # refused by validation, still split by model


@responses.activate
def test_a_request_whose_every_model_failed_is_logged_as_failed_over(gw):
    """X-Failover said true while the row said false: the report's failover rate undercounted outages."""
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(ANTHROPIC_URL, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                   status=529)
    resp = gw.post("/v1/chat/completions", json=BODY, headers={"Cache-Control": "no-cache"})
    assert resp.status_code >= 500 and resp.headers["X-Failover"] == "true"
    row = the_row(gw, resp)
    assert row.failover_used is True and row.provider is None
    assert {a["provider"] for a in json.loads(row.attempts)} >= {"openai", "anthropic"}


@responses.activate
def test_a_stream_is_priced_logged_and_its_usage_chunk_carries_the_cost(gw):
    responses.post(ANTHROPIC_URL, body=anthropic_stream(["Hi", " there"]), content_type="text/event-stream", stream=True)
    resp = gw.post("/v1/chat/completions", headers={"Cache-Control": "no-cache"},
                   json={**BODY, "model": "claude-haiku-4-5", "stream": True, "stream_options": {"include_usage": True}})
    events = [e[6:] for e in resp.get_data(as_text=True).split("\n\n") if e]
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["cost_usd"] > 0
    row = the_row(gw, resp)
    assert row.stream is True and row.status_code == 200
    assert (row.prompt_tokens, row.completion_tokens) == (11, 2)
    assert float(row.cost_usd) == pytest.approx(usage_chunk["cost_usd"])


@responses.activate
def test_no_key_of_any_kind_is_ever_in_a_row(gw):
    responses.post(OPENAI_URL, json=openai_error(401, "Incorrect API key provided: sk-test-openai-SECRET",
                                                 "invalid_request_error", "invalid_api_key"), status=401)
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = gw.post("/v1/chat/completions", json=BODY, headers={"Cache-Control": "no-cache"})
    row = the_row(gw, resp)
    text = " ".join(str(v) for v in row)
    for secret in SECRETS + (gw.key, gw.key[11:]):
        assert secret not in text


@responses.activate
def test_a_model_without_a_price_is_served_and_logged_with_no_cost(gw):
    responses.post("https://api.openai.com/v1/chat/completions", json=openai_completion(model="gpt-5-nano"))
    resp = gw.post("/v1/chat/completions", json={**BODY, "model": "openai/gpt-5-nano"},
                   headers={"Cache-Control": "no-cache"})
    assert resp.status_code == 200 and resp.get_json()["cost_usd"] is None
    assert the_row(gw, resp).cost_usd is None


@responses.activate
def test_with_request_logging_off_no_row_is_queued_but_metrics_still_count(make_app):
    from gateway import metrics
    app, key = make_app(GATEWAY_LOG_REQUESTS="false")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    gw = app.extensions["gateway"]
    responses.post(OPENAI_URL, json=openai_completion())
    counted = metrics.REQUESTS.labels("gpt-4o-mini", "openai", "200")
    before = counted._value.get()
    resp = client.post("/v1/chat/completions", json=BODY, headers={"Cache-Control": "no-cache"})
    assert resp.status_code == 200 and resp.headers["X-Cost-USD"] != "0.000000"
    assert gw.log_writer.queue_depth() == 0
    gw.log_writer.flush(timeout=10)
    with gw.engine.connect() as conn:
        assert conn.execute(select(gateway_logs)).all() == []
    metrics.TALLY.flush()
    assert counted._value.get() == before + 1


@responses.activate
def test_a_rate_limited_request_leaves_a_row(make_app):
    from gateway.store.keys import create_key
    app, _ = make_app()
    key, key_id = create_key(app.extensions["gateway"].engine, "limited", rate_limit_per_minute=1)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    client.gateway = app.extensions["gateway"]
    responses.post(OPENAI_URL, json=openai_completion())
    client.post("/v1/chat/completions", json=BODY)
    refused = client.post("/v1/chat/completions", json=BODY)
    assert refused.status_code == 429
    row = the_row(client, refused)
    assert (row.status_code, row.api_key_id, row.provider) == (429, key_id, None)
    assert "Rate limit" in row.error_message
    assert row.model == "gpt-4o-mini"                 # refused before its body was read, still split by model
    big = client.post("/v1/chat/completions", json={**BODY, "pad": "x" * 20000})
    assert big.status_code == 429 and the_row(client, big).model is None   # too large to read for it


@responses.activate
def test_prompts_and_answers_are_stored_only_when_asked(make_app):
    app, key = make_app(GATEWAY_LOG_BODIES="true")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    client.gateway = app.extensions["gateway"]
    responses.post(OPENAI_URL, json=openai_completion("Hello there."))
    row = the_row(client, client.post("/v1/chat/completions", json=BODY))
    assert "Say hello" in row.request_body and "Hello there." in row.response_body


@responses.activate
def test_by_default_no_prompt_or_answer_is_stored(gw):
    responses.post(OPENAI_URL, json=openai_completion("Hello there."))
    row = the_row(gw, gw.post("/v1/chat/completions", json=BODY))
    assert row.request_body is None and row.response_body is None
