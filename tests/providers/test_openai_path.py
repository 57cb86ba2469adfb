"""The OpenAI path end to end through the Flask app, with OpenAI's wire format mocked by `responses`."""
import json

import pytest
import responses
from openai.types.chat import ChatCompletion, ChatCompletionChunk

URL = "https://api.openai.com/v1/chat/completions"
SECRET = "sk-test-openai-SECRET"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
COMPLETION = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion", "created": 1741569952,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I assist you today?",
                                         "refusal": None, "annotations": []},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
    "system_fingerprint": "fp_44709d6fcb",
}


def sse(*events, done=True):
    out = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (out + ("data: [DONE]\n\n" if done else "")).encode()


def chunk(delta, finish=None):
    return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1727346168,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1727346168,
               "model": "gpt-4o-mini-2024-07-18", "choices": [],
               "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16}}
STREAM = [chunk({"role": "assistant", "content": "", "refusal": None}), chunk({"content": "I'm"}),
          chunk({"content": " here"}), chunk({}, "stop"), USAGE_CHUNK]


@pytest.fixture
def openai_only(make_app):
    app, key = make_app(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return c


def events(resp):
    lines = [line for line in resp.get_data(as_text=True).split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] for line in lines]


@responses.activate
def test_a_completion_passes_through_with_headers(openai_only):
    upstream = responses.post(URL, json=COMPLETION)
    resp = openai_only.post("/v1/chat/completions", json={**BODY, "reasoning_effort": "low"})
    assert resp.status_code == 200
    ChatCompletion.model_validate(resp.get_json())
    assert resp.get_json()["choices"][0]["message"]["content"] == "Hello! How can I assist you today?"
    assert resp.headers["X-Provider"] == "openai"
    assert resp.headers["X-Request-Id"].startswith("req_")
    assert int(resp.headers["X-Latency-Ms"]) >= 0
    sent = json.loads(upstream.calls[0].request.body)
    assert sent["reasoning_effort"] == "low" and sent["model"] == "gpt-4o-mini"
    assert upstream.calls[0].request.headers["Authorization"] == f"Bearer {SECRET}"


@responses.activate
def test_a_stream_is_relayed_chunk_by_chunk_and_ends_with_done(openai_only):
    upstream = responses.post(URL, body=sse(*STREAM), content_type="text/event-stream", stream=True)
    resp = openai_only.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["X-Accel-Buffering"] == "no"
    data = events(resp)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "I'm here"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks), "the usage chunk was not asked for"
    # The gateway always asks for usage so every stream can be priced.
    assert json.loads(upstream.calls[0].request.body)["stream_options"] == {"include_usage": True}


@responses.activate
def test_the_usage_chunk_reaches_a_client_that_asked(openai_only):
    responses.post(URL, body=sse(*STREAM), content_type="text/event-stream", stream=True)
    resp = openai_only.post("/v1/chat/completions",
                            json={**BODY, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(d) for d in events(resp)[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 16


@pytest.mark.parametrize("status,body", [
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error",
                     "param": "messages", "code": "context_length_exceeded"}}),
    (404, {"error": {"message": "The model `gpt-4o-mini` does not exist or you do not have access to it.",
                     "type": "invalid_request_error", "param": None, "code": "model_not_found"}}),
    (422, {"error": {"message": "Unprocessable.", "type": "invalid_request_error", "param": None, "code": None}}),
])
@responses.activate
def test_upstream_client_errors_come_back_with_their_status_and_message(openai_only, status, body):
    responses.post(URL, json=body, status=status)
    resp = openai_only.post("/v1/chat/completions", json=BODY)
    assert resp.status_code == status
    assert resp.get_json() == body
    assert resp.headers["X-Provider"] == "openai"


@responses.activate
def test_an_upstream_500_is_an_openai_shaped_error(openai_only):
    responses.post(URL, json={"error": {"message": "The server had an error processing your request.",
                                        "type": "server_error", "param": None, "code": None}}, status=500)
    resp = openai_only.post("/v1/chat/completions", json={**BODY}, headers={"X-Gateway-Failover": "off"})
    assert resp.status_code == 500
    assert resp.get_json()["error"]["message"] == "The server had an error processing your request."


@responses.activate
def test_an_upstream_401_never_shows_our_provider_key(openai_only):
    responses.post(URL, json={"error": {"message": f"Incorrect API key provided: {SECRET}.",
                                        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
                   status=401)
    resp = openai_only.post("/v1/chat/completions", json=BODY)
    assert resp.status_code >= 400
    assert SECRET not in resp.get_data(as_text=True)
    assert set(resp.get_json()["error"]) == {"message", "type", "param", "code"}


@responses.activate
def test_malformed_upstream_json_is_a_502(openai_only):
    responses.post(URL, body="<html>oops</html>", status=200, content_type="application/json")
    resp = openai_only.post("/v1/chat/completions", json=BODY)
    assert resp.status_code == 502
    assert set(resp.get_json()["error"]) == {"message", "type", "param", "code"}


@responses.activate
def test_a_stream_cut_midway_ends_with_an_error_event_not_done(openai_only):
    responses.post(URL, body=sse(*STREAM[:3], done=False), content_type="text/event-stream", stream=True)
    resp = openai_only.post("/v1/chat/completions", json={**BODY, "stream": True})
    data = events(resp)
    assert "[DONE]" not in data
    last = json.loads(data[-1])
    assert set(last) == {"error"} and "cut off" in last["error"]["message"] or "complete" in last["error"]["message"]
    assert not any(json.loads(d).get("choices", [{}])[0].get("finish_reason") == "stop" for d in data[:-1])


@responses.activate
def test_a_stream_without_done_but_finished_is_finalised(openai_only):
    responses.post(URL, body=sse(*STREAM, done=False), content_type="text/event-stream", stream=True)
    resp = openai_only.post("/v1/chat/completions", json={**BODY, "stream": True})
    data = events(resp)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["choices"][0]["finish_reason"] == "stop"


@responses.activate
def test_a_stream_that_fails_before_the_first_byte_gets_a_real_status(openai_only):
    responses.post(URL, json={"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                                        "code": "rate_limit_exceeded"}}, status=429, headers={"Retry-After": "20"})
    resp = openai_only.post("/v1/chat/completions", json={**BODY, "stream": True},
                            headers={"X-Gateway-Failover": "off"})
    assert resp.status_code == 429
    assert resp.get_json()["error"]["code"] == "rate_limit_exceeded"


@responses.activate
def test_a_mid_stream_error_event_reaches_the_client_as_an_error(openai_only):
    err = {"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                     "param": None, "code": None}}
    responses.post(URL, body=sse(STREAM[0], STREAM[1], err, done=False), content_type="text/event-stream",
                   stream=True)
    resp = openai_only.post("/v1/chat/completions", json={**BODY, "stream": True})
    data = events(resp)
    assert json.loads(data[-1])["error"]["message"] == err["error"]["message"]
    assert "[DONE]" not in data
