"""An upstream answer of the wrong shape (JSON that parses, holding what no API sends) is the upstream's fault:
a 502 that fails over, an event skipped, a count left out; never a 500 of ours, a stream cut with no end, or
a log row refused. Found by a fault audit; the upstreams here are mocked with `responses`."""
import json
import math

import pytest
import responses

from gateway.accounting import counted
from gateway.providers.transport import _retry_after
from gateway.translate.common import error_object
from tests.providers.wire import ANTHROPIC_URL, OPENAI_URL, anthropic_message, openai_completion, openai_stream

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.fixture
def client(make_app):
    app, key = make_app()
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    manager = app.extensions["gateway"].manager
    manager.sleep = lambda seconds: None
    c.writer = app.extensions["gateway"].log_writer
    return c


def chat(client, body=BODY, **headers):
    return client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-store", **headers})


def stored_row(client, request_id):
    from sqlalchemy import select
    from gateway.store.models import gateway_logs
    assert client.writer.flush(10)
    with client.application.extensions["gateway"].engine.connect() as conn:
        return conn.execute(select(gateway_logs).where(gateway_logs.c.request_id == request_id)).one()


@pytest.mark.parametrize("change", [
    {"choices": [5]}, {"choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": None, "finish_reason": "stop"}]}, {"usage": "lots"},
])
@responses.activate
def test_an_answer_of_the_wrong_shape_fails_over(client, change):
    responses.post(OPENAI_URL, json={**openai_completion(), **change})
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"


@pytest.mark.parametrize("change", [
    {"choices": [5]}, {"usage": "lots"},
])
@responses.activate
def test_without_failover_an_answer_of_the_wrong_shape_is_a_502(client, change):
    responses.post(OPENAI_URL, json={**openai_completion(), **change})
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "bad_upstream_response"


@pytest.mark.parametrize("usage, prompt, completion, priced", [
    ({"prompt_tokens": "x", "completion_tokens": "y", "total_tokens": 5}, None, None, False),
    ({"prompt_tokens": 1.5, "completion_tokens": 1e300, "total_tokens": 5}, None, None, False),
    ({"prompt_tokens": -5, "completion_tokens": 4, "total_tokens": -1}, None, 4, False),
    ({"prompt_tokens": 2 ** 40, "completion_tokens": 4, "total_tokens": 13}, None, 4, False),
    ({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13, "prompt_tokens_details": "x"}, 9, 4, True),
])
@responses.activate
def test_usage_counts_that_are_no_counts_are_left_out_not_a_500(client, usage, prompt, completion, priced):
    responses.post(OPENAI_URL, json={**openai_completion(), "usage": usage})
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["choices"][0]["message"]["content"] == "Hello from OpenAI."
    row = stored_row(client, resp.headers["X-Request-Id"])   # the row is stored, not refused
    assert (row.status_code, row.prompt_tokens, row.completion_tokens) == (200, prompt, completion)
    assert (row.cost_usd is not None) == priced == ("X-Cost-USD" in resp.headers and
                                                    resp.get_json()["cost_usd"] is not None)


@pytest.mark.parametrize("usage, clean", [
    ({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
     {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}),
    ({"prompt_tokens": "9", "completion_tokens": 4.0, "total_tokens": True}, {}),
    ({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": -1, "audio_tokens": 0}},
     {"prompt_tokens": 9, "prompt_tokens_details": {"audio_tokens": 0}}),
    ({"completion_tokens": 4, "completion_tokens_details": None},
     {"completion_tokens": 4, "completion_tokens_details": None}),
    ({"completion_tokens": 4, "completion_tokens_details": 7}, {"completion_tokens": 4}),
    ("lots", None), (None, None),
])
def test_counted_keeps_only_counts(usage, clean):
    assert counted(usage) == clean


def test_counted_returns_a_clean_usage_as_it_is():
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
             "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": None}
    assert counted(usage) is usage


def _stream_with(event):
    good = openai_stream(["The quick"], complete=False)
    rest = openai_stream([" fox."]).split(b"\n\n", 1)[1]  # its chunks after the role chunk
    return good + b"data: " + event + b"\n\n" + rest


@pytest.mark.parametrize("event", [
    b'{"choices": [{"index": {"a": 1}, "delta": {"content": "?"}}]}',
    b'{"choices": [5]}',
    b'{"choices": "abc"}',
    b'{"choices": [{"index": 0, "delta": "x"}]}',
])
@responses.activate
def test_a_stream_event_of_the_wrong_shape_is_skipped_and_the_stream_ends_whole(client, event):
    responses.post(OPENAI_URL, body=_stream_with(event), content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True}, **{"X-Gateway-Failover": "off"})
    events = [line[6:] for line in resp.get_data(as_text=True).split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in map(json.loads, events[:-1]) if c.get("choices"))
    assert text == "The quick fox."


@responses.activate
def test_a_stream_event_that_is_not_utf8_ends_the_stream_with_an_error_event(client):
    responses.post(OPENAI_URL, body=_stream_with(b'{"choices": [{"index": 0, "delta": {"content": "\xff\xfe"}}]}'),
                   content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True}, **{"X-Gateway-Failover": "off"})
    events = [line[6:] for line in resp.get_data(as_text=True).split("\n") if line.startswith("data: ")]
    last = json.loads(events[-1])
    assert last["error"]["type"] == "upstream_error" and "UTF-8" in last["error"]["message"]
    assert stored_row(client, resp.headers["X-Request-Id"]).status_code == 502


@responses.activate
def test_a_bug_of_ours_mid_stream_still_ends_the_stream_with_an_error_event(client, monkeypatch):
    from gateway import accounting

    def broken(*args):
        raise RuntimeError("pricing exploded")
    monkeypatch.setattr(accounting, "cost", broken)
    responses.post(OPENAI_URL, body=openai_stream(["Hi"]), content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True})
    events = [line[6:] for line in resp.get_data(as_text=True).split("\n") if line.startswith("data: ")]
    last = json.loads(events[-1])
    assert last["error"]["type"] == "server_error" and resp.headers["X-Request-Id"] in last["error"]["message"]
    assert "pricing exploded" not in resp.get_data(as_text=True)
    assert stored_row(client, resp.headers["X-Request-Id"]).status_code == 500


@responses.activate
def test_an_error_body_with_fields_that_are_not_text_is_passed_on_as_text(client):
    responses.post(OPENAI_URL, json={"error": {"message": 5, "type": 6, "param": ["x"], "code": {"a": 1}}}, status=400)
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == {"message": "5", "type": "6", "param": "['x']", "code": "{'a': 1}"}


@responses.activate
def test_the_provider_key_is_taken_out_of_every_field_of_an_upstream_error(client):
    key = "sk-test-openai-SECRET"
    responses.post(OPENAI_URL, json={"error": {"message": "bad", "type": key, "param": key, "code": key}},
                   status=400)
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 400 and "SECRET" not in resp.get_data(as_text=True)


def test_error_object_fields_are_text():
    assert error_object(5, 6, 7, 8) == {"message": "5", "type": "6", "param": "7", "code": "8"}
    assert error_object("m") == {"message": "m", "type": "invalid_request_error", "param": None, "code": None}


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after-ms": "x", "retry-after": "3"}, 3.0),
    ({"retry-after": "inf"}, None), ({"retry-after": "nan"}, None), ({"retry-after": "1e400"}, None),
    ({"retry-after-ms": "inf"}, None), ({"retry-after": "-5"}, None), ({"retry-after": "99999999999"}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None), ({}, None),
])
def test_retry_after_is_a_usable_number_of_seconds_or_none(headers, seconds):
    got = _retry_after(headers)
    assert got == seconds and (got is None or math.isfinite(got))


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
@responses.activate
def test_a_429_with_a_retry_after_of_no_number_is_still_a_429(client, value):
    responses.post(OPENAI_URL, json={"error": {"message": "slow down", "type": "requests", "code": None}},
                   status=429, headers={"Retry-After": value})
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 429 and "Retry-After" not in resp.headers


GEMINI_FLASH = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"


@pytest.mark.parametrize("url, model, body", [
    (ANTHROPIC_URL, "claude-haiku-4-5", {**anthropic_message(), "content": [5]}),
    (ANTHROPIC_URL, "claude-haiku-4-5", {**anthropic_message(), "usage": {"input_tokens": "x", "output_tokens": 1}}),
    (GEMINI_FLASH, "gemini-2.5-flash", {"candidates": [5]}),
    (GEMINI_FLASH, "gemini-2.5-flash", {"candidates": [{"content": {"parts": "x"}, "finishReason": "STOP"}]}),
])
@responses.activate
def test_a_claude_or_gemini_answer_of_the_wrong_shape_is_a_502_not_a_500(client, url, model, body):
    responses.post(url, json=body)
    resp = chat(client, {**BODY, "model": model}, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 502, resp.data


@pytest.mark.parametrize("url, model, body, status", [
    (ANTHROPIC_URL, "claude-haiku-4-5", {"type": "error", "error": {"type": [1], "message": "bad"}}, 400),
    (GEMINI_FLASH, "gemini-2.5-flash", {"error": {"code": 400, "message": 5, "status": "INVALID_ARGUMENT",
                                                   "details": [{"reason": ["x"]}]}}, 400),
])
@responses.activate
def test_a_claude_or_gemini_error_body_of_the_wrong_shape_keeps_its_status(client, url, model, body, status):
    responses.post(url, json=body, status=status)
    resp = chat(client, {**BODY, "model": model}, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == status and resp.get_json()["error"]["message"]


@responses.activate
def test_a_stream_with_an_event_skipped_is_not_cached(client):
    upstream = responses.post(OPENAI_URL, body=_stream_with(b'{"choices": [5]}'), content_type="text/event-stream",
                              stream=True)
    body = {**BODY, "stream": True, "messages": [{"role": "user", "content": "Cache me if you can"}]}
    first = client.post("/v1/chat/completions", json=body)
    assert first.get_data(as_text=True).endswith("data: [DONE]\n\n")
    second = client.post("/v1/chat/completions", json=body)
    assert second.headers.get("X-Cache-Hit") == "miss" and upstream.call_count == 2


@responses.activate
def test_a_whole_stream_is_still_cached(client):
    upstream = responses.post(OPENAI_URL, body=openai_stream(["Hi"]), content_type="text/event-stream", stream=True)
    body = {**BODY, "stream": True, "messages": [{"role": "user", "content": "Cache me"}]}
    client.post("/v1/chat/completions", json=body).get_data()
    second = client.post("/v1/chat/completions", json=body)
    assert second.headers.get("X-Cache-Hit") == "exact" and upstream.call_count == 1
