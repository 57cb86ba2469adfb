"""A provider's JSON may carry half a surrogate pair as an escape ("\\ud83d"). Python's json reads it as a lone
surrogate, which orjson refuses to write: the answer was a 500, a stream ended without its error event or
[DONE], the cache kept nothing and a log batch was refused. It becomes U+FFFD, as invalid UTF-8 does."""
import json

import pytest
import responses
from sqlalchemy import select

from gateway.jsonbytes import dumps
from gateway.store.models import gateway_logs
from tests.providers.wire import OPENAI_URL, openai_completion, openai_stream

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
HALF = "half \ud83d emoji"   # a lone high surrogate: what json.loads makes of "half \ud83d emoji"
FIXED = "half \ufffd emoji"


def test_dumps_replaces_lone_surrogates_everywhere_and_keeps_real_pairs():
    out = json.loads(dumps({"k\udc00": [HALF, ("\U0001F600",)], "n": 1}))
    assert out == {"k\ufffd": [FIXED, ["\U0001F600"]], "n": 1}


def test_dumps_still_raises_for_what_is_not_json():
    with pytest.raises(TypeError):
        dumps({"a": object()})


@pytest.fixture
def client(make_app):
    app, key = make_app(GATEWAY_LOG_BODIES="true")
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    c.gateway = app.extensions["gateway"]
    return c


def _row(client, resp):
    client.gateway.log_writer.flush(timeout=10)
    with client.gateway.engine.connect() as conn:
        return conn.execute(select(gateway_logs).where(
            gateway_logs.c.request_id == resp.headers["X-Request-Id"])).one()


@responses.activate
def test_an_answer_with_a_lone_surrogate_is_served_cached_and_logged(client):
    responses.post(OPENAI_URL, json=openai_completion(HALF))
    resp = client.post("/v1/chat/completions", json=BODY)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["choices"][0]["message"]["content"] == FIXED
    assert FIXED in _row(client, resp).response_body
    again = client.post("/v1/chat/completions", json=BODY)
    assert again.headers["X-Cache-Hit"] == "exact"
    assert again.get_json()["choices"][0]["message"]["content"] == FIXED
    assert len(responses.calls) == 1


@responses.activate
def test_a_stream_with_a_lone_surrogate_reaches_its_end(client):
    responses.post(OPENAI_URL, body=openai_stream(["Hi ", HALF]), content_type="text/event-stream", stream=True)
    resp = client.post("/v1/chat/completions", json={**BODY, "stream": True})
    events = [e[6:] for e in resp.get_data(as_text=True).split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "error" not in chunks[-1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hi " + FIXED
    assert _row(client, resp).status_code == 200


@pytest.mark.parametrize("depth, status", [(300, 200), (1000, 400)])
@responses.activate
def test_a_deeply_nested_body_is_answered_and_logged_with_bodies_on(client, depth, status):
    """orjson writes at most 254 levels, and the request may nest up to 1,024: with bodies logged, an answer
    already paid for upstream was a 500 and no row was written. Past what any encoder here writes (~1,000
    levels), the request was a 500 before it left; it is the client's 400."""
    responses.post(OPENAI_URL, json=openai_completion("Hi."))
    meta = "[" * depth + '"x"' + "]" * depth   # written by hand: the json module cannot write 1,000 levels either
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello", "meta": %s}]}' % meta
    resp = client.post("/v1/chat/completions", data=body, content_type="application/json",
                       headers={"Cache-Control": "no-cache"})
    assert resp.status_code == status, resp.get_data(as_text=True)
    row = _row(client, resp)
    assert row.status_code == status and row.request_body
    if status == 200:
        assert "Hi." in row.response_body
    else:
        assert resp.get_json()["error"]["code"] == "nested_too_deeply" and not responses.calls


def test_loads_keeps_integers_past_64_bits_exact():
    from gateway.jsonbytes import loads
    big = 98765432109876543210
    assert loads('{"args": {"account": %d}}' % big) == {"args": {"account": big}}
    assert loads(b'[1, -%d]' % big) == [1, -big]
    assert loads('{"id": "chatcmpl-123456789012345678901234"}') == {"id": "chatcmpl-123456789012345678901234"}
    assert json.loads(dumps({"n": big})) == {"n": big}     # and writes them back exactly


@responses.activate
def test_a_stream_carrying_a_huge_integer_relays_it_exactly(client):
    """A Gemini function call's args with a 20-digit number: read by orjson as a float, digits lost."""
    from tests.providers.wire import GEMINI_BASE
    event = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "pay", "args": {"account": 98765432109876543210}}}]}, "finishReason": "STOP",
        "index": 0}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}}
    sse = ("data: " + json.dumps(event) + "\r\n\r\n").encode()
    responses.post(GEMINI_BASE + "gemini-2.5-flash:streamGenerateContent", body=sse,
                   content_type="text/event-stream", stream=True)
    resp = client.post("/v1/chat/completions", json={**BODY, "model": "gemini-2.5-flash", "stream": True,
                                                     "tools": [{"type": "function", "function": {"name": "pay"}}]})
    events = [e[6:] for e in resp.get_data(as_text=True).split("\n\n") if e]
    calls = [c for e in events[:-1] for ch in json.loads(e)["choices"] for c in ch["delta"].get("tool_calls") or ()]
    assert json.loads(calls[0]["function"]["arguments"]) == {"account": 98765432109876543210}
