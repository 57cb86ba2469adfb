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
