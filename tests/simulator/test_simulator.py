"""The provider simulator, exercised over real HTTP in a child process, one behaviour per test."""
import json
import time

import openai
import pytest
import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.simulator import spawn_process

AUTH_OA = {"Authorization": "Bearer sk-test"}
AUTH_AN = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
AUTH_GM = {"x-goog-api-key": "AIza-test"}
USER = [{"role": "user", "content": "What is the weather in Paris today?"}]
WEATHER_SCHEMA = {"type": "object", "properties": {
    "location": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
    "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["location"]}
WEATHER_ARGS = {"location": "example", "days": 1, "metric": True, "unit": "celsius", "where": {"lat": 1},
                "tags": ["example"]}
OA_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
            {"type": "function", "function": {"name": "get_time", "parameters": {
                "type": "object", "properties": {"zone": {"type": "string"}}}}}]
AN_TOOLS = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
GM_TOOLS = [{"functionDeclarations": [{"name": "getWeather", "parameters": {
    "type": "OBJECT", "properties": {"location": {"type": "STRING"}}, "required": ["location"]}}]}]


@pytest.fixture(scope="module")
def sim():
    proc, base = spawn_process([])
    yield base
    proc.terminate()
    proc.wait(5)


@pytest.fixture(autouse=True)
def _clean(sim):
    requests.post(sim + "/_sim/reset", timeout=5)


def oa(base, body, fault=None, headers=AUTH_OA, **kw):
    h = dict(headers, **({"X-Sim-Fault": fault} if fault else {}))
    return requests.post(base + "/v1/chat/completions", json=body, headers=h, timeout=kw.pop("timeout", 10), **kw)


def an(base, body, fault=None, headers=AUTH_AN, **kw):
    h = dict(headers, **({"X-Sim-Fault": fault} if fault else {}))
    body = dict({"model": "claude-sonnet-4-5", "max_tokens": 1024}, **body)
    return requests.post(base + "/v1/messages", json=body, headers=h, timeout=kw.pop("timeout", 10), **kw)


def gm(base, body, model="gemini-2.5-flash", streaming=False, fault=None, headers=AUTH_GM, query="", **kw):
    h = dict(headers, **({"X-Sim-Fault": fault} if fault else {}))
    method = "streamGenerateContent?alt=sse" if streaming else "generateContent"
    url = f"{base}/v1beta/models/{model}:{method}" + (("&" if streaming else "?") + query if query else "")
    return requests.post(url, json=body, headers=h, timeout=kw.pop("timeout", 10), **kw)


GM_USER = {"contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris today?"}]}]}


def call(provider, base, fault=None, streaming=False, **kw):
    """One plain request to `provider`; `stream=True` in kw makes requests hand back the raw body lazily."""
    if provider == "openai":
        return oa(base, {"model": "gpt-4o-mini", "messages": USER, "stream": streaming}, fault, **kw)
    if provider == "anthropic":
        return an(base, {"messages": USER, "stream": streaming}, fault, **kw)
    return gm(base, GM_USER, streaming=streaming, fault=fault, **kw)


def oa_events(raw):
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == ""
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks[:-1])
    return [b[6:] for b in blocks[:-1]]


def an_events(raw):
    out = []
    for block in raw.decode().split("\n\n")[:-1]:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        out.append((event[7:], data[6:]))
    return out


def gm_events(raw):
    blocks = raw.split(b"\r\n\r\n")
    assert blocks[-1] == b""
    assert all(b.startswith(b"data: ") for b in blocks[:-1])
    return [json.loads(b[6:]) for b in blocks[:-1]]


def partial(resp):
    """Read a streamed body until the server hangs up; return (bytes, whether it ended cleanly)."""
    got = b""
    try:
        for piece in resp.iter_content(None):
            got += piece
    except requests.exceptions.ChunkedEncodingError:
        return got, False
    return got, True


# ------------------------------------------------------------------ OpenAI

def test_openai_text_reply_is_a_valid_chat_completion(sim):
    r = oa(sim, {"model": "gpt-4o-mini", "messages": USER})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    c = ChatCompletion.model_validate(r.json())
    assert c.object == "chat.completion" and c.model == "gpt-4o-mini"
    assert c.choices[0].finish_reason == "stop" and len(c.choices[0].message.content.split()) == 12
    assert c.usage.prompt_tokens == 7 and c.usage.completion_tokens == 12 and c.usage.total_tokens == 19


def test_openai_stream_framing_and_usage_chunk(sim):
    body = {"model": "gpt-4o-mini", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    r = oa(sim, body)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    events = oa_events(r.content)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert chunks[-2].choices[0].finish_reason == "stop" and json.loads(events[-3])["choices"][0]["delta"] == {}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == oa(sim, {"model": "gpt-4o-mini", "messages": USER}).json()["choices"][0]["message"]["content"]


def test_openai_stream_without_include_usage_has_no_usage(sim):
    events = oa_events(oa(sim, {"model": "gpt-4o", "messages": USER, "stream": True}).content)
    assert all("usage" not in json.loads(e) for e in events[:-1])


def test_openai_tool_call_arguments_follow_schema(sim):
    c = ChatCompletion.model_validate(oa(sim, {"model": "gpt-4o", "messages": USER, "tools": OA_TOOLS}).json())
    choice = c.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call_ = choice.message.tool_calls[0]
    assert call_.function.name == "get_weather" and json.loads(call_.function.arguments) == WEATHER_ARGS


def test_openai_streamed_tool_call_fragments(sim):
    events = oa_events(oa(sim, {"model": "gpt-4o", "messages": USER, "tools": OA_TOOLS, "stream": True}).content)
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert chunks[0].choices[0].delta.content is None
    frags = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert frags[0].id.startswith("call_") and frags[0].function.name == "get_weather"
    assert frags[0].function.arguments == "" and all(f.id is None and f.index == 0 for f in frags[1:])
    assert len(frags) > 3 and json.loads("".join(f.function.arguments for f in frags)) == WEATHER_ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_named_tool_choice_forces_that_tool(sim):
    choice = {"type": "function", "function": {"name": "get_time"}}
    r = oa(sim, {"model": "gpt-4o", "messages": USER, "tools": OA_TOOLS, "tool_choice": choice}).json()
    assert r["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_time", "arguments":
                                                                        '{"zone":"example"}'}


def test_openai_tool_result_last_gets_text(sim):
    msgs = USER + [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = oa(sim, {"model": "gpt-4o", "messages": msgs, "tools": OA_TOOLS}).json()
    assert r["choices"][0]["finish_reason"] == "stop" and r["choices"][0]["message"]["content"]


def test_openai_max_tokens_gives_length(sim):
    r = oa(sim, {"model": "gpt-4o", "messages": USER, "max_completion_tokens": 3}).json()
    assert r["choices"][0]["finish_reason"] == "length" and len(r["choices"][0]["message"]["content"].split()) == 3
    assert r["usage"]["completion_tokens"] == 3


def test_openai_stop_sequence_truncates(sim):
    full = oa(sim, {"model": "gpt-4o", "messages": USER}).json()["choices"][0]["message"]["content"]
    stop = " " + full.split()[4]
    r = oa(sim, {"model": "gpt-4o", "messages": USER, "stop": [stop]}).json()["choices"][0]
    assert r["message"]["content"] == full[:full.index(stop)] and r["finish_reason"] == "stop"


def test_openai_json_object_mode_answers_with_the_words_as_a_json_object(sim):
    text = oa(sim, {"model": "gpt-4o-mini", "messages": USER}).json()["choices"][0]["message"]["content"]
    body = {"model": "gpt-4o-mini", "messages": USER, "response_format": {"type": "json_object"}}
    assert json.loads(oa(sim, body).json()["choices"][0]["message"]["content"]) == {"answer": text}


def test_openai_json_schema_mode_answers_with_the_schemas_example(sim):
    body = {"model": "gpt-4o-mini", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {
        "name": "w", "strict": True, "schema": WEATHER_SCHEMA}}}
    assert json.loads(oa(sim, body).json()["choices"][0]["message"]["content"]) == WEATHER_ARGS


def test_openai_streamed_json_mode_reassembles_to_the_same_object(sim):
    body = {"model": "gpt-4o-mini", "messages": USER, "response_format": {"type": "json_object"}}
    whole = oa(sim, body).json()["choices"][0]["message"]["content"]
    chunks = [json.loads(e) for e in oa_events(oa(sim, dict(body, stream=True)).content)[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == whole


def test_openai_sdk_parses_replies_and_streams(sim):
    client = openai.OpenAI(base_url=sim + "/v1", api_key="sk-test", max_retries=0)
    c = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == c.choices[0].message.content
    assert chunks[-1].usage.total_tokens == c.usage.total_tokens
    assert [m.id for m in client.models.list()][:2] == ["gpt-4o", "gpt-4o-mini"]


def test_openai_sdk_raises_on_mid_stream_error(sim):
    client = openai.OpenAI(base_url=sim + "/v1", api_key="sk-test", max_retries=0,
                           default_headers={"X-Sim-Fault": "error_event:after=2"})
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))


def test_openai_missing_bearer_is_401(sim):
    r = oa(sim, {"model": "gpt-4o", "messages": USER}, headers={})
    assert r.status_code == 401 and r.json()["error"]["message"].startswith("You didn't provide an API key")
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("messages,param", [
    ([], "messages"),
    ([{"role": "tool", "tool_call_id": "call_x", "content": "x"}], "messages.[0].role"),
    (USER + [{"role": "assistant", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}], "messages.[1].role"),
])
def test_openai_validation(sim, messages, param):
    r = oa(sim, {"model": "gpt-4o", "messages": messages})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"


def _oa_tool_history(call_id, result_id):
    return USER + [{"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
        "name": "get_weather", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": result_id, "content": "sunny"}]


@pytest.mark.parametrize("call_id,result_id,param", [
    ("c" * 41, "c" * 41, "messages[1].tool_calls[0].id"),
    ("c" * 40, "c" * 41, "messages[2].tool_call_id"),
], ids=["call-id", "tool-call-id"])
def test_openai_tool_call_ids_longer_than_40_are_rejected(sim, call_id, result_id, param):
    ok = oa(sim, {"model": "gpt-4o", "messages": _oa_tool_history("c" * 40, "c" * 40), "tools": OA_TOOLS})
    assert ok.status_code == 200
    r = oa(sim, {"model": "gpt-4o", "messages": _oa_tool_history(call_id, result_id), "tools": OA_TOOLS})
    assert r.status_code == 400
    assert r.json() == {"error": {
        "message": f"Invalid '{param}': string too long. Expected a string with maximum length 40, but got a "
                   "string with length 41 instead.",
        "type": "invalid_request_error", "param": param, "code": "string_above_max_length"}}


# ------------------------------------------------------------------ Anthropic

def test_anthropic_text_message(sim):
    r = an(sim, {"messages": USER}).json()
    assert r["type"] == "message" and r["role"] == "assistant" and r["model"] == "claude-sonnet-4-5"
    assert r["id"].startswith("msg_") and r["stop_reason"] == "end_turn" and r["stop_sequence"] is None
    assert r["content"][0]["type"] == "text" and len(r["content"][0]["text"].split()) == 12
    assert r["usage"] == {"input_tokens": 7, "output_tokens": 12, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "service_tier": "standard"}


def test_anthropic_stream_event_sequence(sim):
    events = an_events(an(sim, {"messages": USER, "stream": True}).content)
    names = [e for e, _ in events]
    assert names[:4] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert ("ping", '{"type": "ping"}') in events
    assert all(json.loads(d)["type"] == e for e, d in events)
    text = "".join(json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == an(sim, {"messages": USER}).json()["content"][0]["text"]
    assert json.loads(events[-2][1])["usage"] == {"output_tokens": 12}
    assert json.loads(events[0][1])["message"]["usage"]["input_tokens"] == 7


def test_anthropic_tool_use(sim):
    r = an(sim, {"messages": USER, "tools": AN_TOOLS}).json()
    assert r["stop_reason"] == "tool_use" and r["content"][0]["type"] == "tool_use"
    assert r["content"][0]["id"].startswith("toolu_") and r["content"][0]["input"] == WEATHER_ARGS


def test_anthropic_streamed_tool_use(sim):
    events = an_events(an(sim, {"messages": USER, "tools": AN_TOOLS, "stream": True}).content)
    start = json.loads(events[1][1])["content_block"]
    assert start["type"] == "tool_use" and start["input"] == {}
    parts = [json.loads(d)["delta"]["partial_json"] for e, d in events if e == "content_block_delta"]
    assert parts[0] == "" and len(parts) > 3 and json.loads("".join(parts)) == WEATHER_ARGS
    assert json.loads(events[-2][1])["delta"]["stop_reason"] == "tool_use"


def test_anthropic_stop_sequence(sim):
    full = an(sim, {"messages": USER}).json()["content"][0]["text"]
    word = full.split()[3]
    r = an(sim, {"messages": USER, "stop_sequences": [word]}).json()
    assert r["stop_reason"] == "stop_sequence" and r["stop_sequence"] == word
    assert r["content"][0]["text"] == full[:full.index(word)]


def test_anthropic_max_tokens_stop_reason(sim):
    r = an(sim, {"messages": USER, "max_tokens": 2}).json()
    assert r["stop_reason"] == "max_tokens" and r["usage"]["output_tokens"] == 2


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_prefill_continues_the_same_text(sim, stream):
    full = an(sim, {"messages": USER}).json()["content"][0]["text"]
    prefill = " ".join(full.split()[:5])
    r = an(sim, {"messages": USER + [{"role": "assistant", "content": prefill}], "stream": stream})
    if stream:
        rest = "".join(json.loads(d)["delta"]["text"] for e, d in an_events(r.content) if e == "content_block_delta")
    else:
        rest = r.json()["content"][0]["text"]
    assert prefill + rest == full and rest.startswith(" ")


def test_anthropic_unrelated_prefill_gets_the_full_reply(sim):
    full = an(sim, {"messages": USER}).json()["content"][0]["text"]
    r = an(sim, {"messages": USER + [{"role": "assistant", "content": "Something else"}]}).json()
    assert r["content"][0]["text"] == full


def test_same_conversation_same_text_on_every_provider(sim):
    texts = {call("openai", sim).json()["choices"][0]["message"]["content"],
             call("anthropic", sim).json()["content"][0]["text"],
             call("gemini", sim).json()["candidates"][0]["content"]["parts"][0]["text"]}
    assert len(texts) == 1  # so a failover to another provider can continue a cut-off reply


def test_gemini_model_prefill_continues_the_same_text(sim):
    full = call("gemini", sim).json()["candidates"][0]["content"]["parts"][0]["text"]
    prefill = " ".join(full.split()[:7])
    contents = GM_USER["contents"] + [{"role": "model", "parts": [{"text": prefill}]}]
    rest = gm(sim, {"contents": contents}).json()["candidates"][0]["content"]["parts"][0]["text"]
    assert prefill + rest == full


def test_anthropic_consecutive_user_turns_are_accepted(sim):
    assert an(sim, {"messages": USER + [{"role": "user", "content": "and tomorrow?"}]}).status_code == 200


@pytest.mark.parametrize("headers,status,kind", [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
    ({"x-api-key": "k"}, 400, "invalid_request_error"),
])
def test_anthropic_auth_headers_required(sim, headers, status, kind):
    r = an(sim, {"messages": USER}, headers=headers)
    assert r.status_code == status and r.json()["type"] == "error" and r.json()["error"]["type"] == kind


TOOL_USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                              "input": {}}]}


@pytest.mark.parametrize("patch,message", [
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"messages": []}, "messages: at least one message is required"),
    ({"messages": [{"role": "system", "content": "x"}] + USER},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
     "messages: text content blocks must be non-empty"),
    ({"messages": USER + [{"role": "assistant", "content": "Sure "}]},
     "messages: final assistant content cannot end with trailing whitespace"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}]},
     "unexpected `tool_use_id` found in `tool_result` blocks: toolu_9"),
    ({"messages": USER + [TOOL_USE, {"role": "user", "content": "hi"}]},
     "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
    ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
    ({"metadata": {"user_id": "alice@example.com"}}, "metadata.user_id: user_id appears to contain an email address"),
])
def test_anthropic_validation(sim, patch, message):
    body = dict({"messages": USER}, **patch)
    if body.get("max_tokens", 1) is None:
        body = {"model": "claude-sonnet-4-5", "messages": USER}
        r = requests.post(sim + "/v1/messages", json=body, headers=AUTH_AN, timeout=5)
    else:
        r = an(sim, body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert message in r.json()["error"]["message"]


BOTH_SAMPLERS = "`temperature` and `top_p` cannot both be specified for this model. Please use only one."


def test_anthropic_45_and_later_refuse_temperature_with_top_p(sim):
    for model in ("claude-sonnet-4-5", "claude-opus-4-5-20251101", "claude-haiku-4-5-20251001", "claude-opus-4-8",
                  "claude-sonnet-5"):
        assert an(sim, {"model": model, "messages": USER, "temperature": 0.5}).ok, model
        assert an(sim, {"model": model, "messages": USER, "top_p": 0.9}).ok, model
        r = an(sim, {"model": model, "messages": USER, "temperature": 0.5, "top_p": 0.9})
        assert r.status_code == 400, model
        assert r.json()["error"] == {"type": "invalid_request_error", "message": BOTH_SAMPLERS}
    # The simulator serves any model name, so the rule follows the version in the name: older ones take both.
    for model in ("claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-3-7-sonnet-20250219",
                  "claude-3-5-haiku-20241022"):
        assert an(sim, {"model": model, "messages": USER, "temperature": 0.5, "top_p": 0.9}).ok, model


def _an_tool_history(use_id, result_id):
    return USER + [{"role": "assistant", "content": [{"type": "tool_use", "id": use_id, "name": "get_weather",
                                                      "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": result_id, "content": "x"}]}]


@pytest.mark.parametrize("use_id,result_id,where", [
    ("functions.get_weather:0", "functions.get_weather:0", "messages.1.content.0.tool_use.id"),
    ("", "", "messages.1.content.0.tool_use.id"),
    ("toolu_1", "toolu_1|sig", "messages.2.content.0.tool_result.tool_use_id"),
], ids=["tool-use-id", "empty-id", "tool-result-id"])
def test_anthropic_tool_ids_must_match_the_pattern(sim, use_id, result_id, where):
    assert an(sim, {"messages": _an_tool_history("toolu_A-z_09", "toolu_A-z_09"), "tools": AN_TOOLS}).ok
    r = an(sim, {"messages": _an_tool_history(use_id, result_id), "tools": AN_TOOLS})
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_request_error",
                                 "message": f"{where}: String should match pattern '^[a-zA-Z0-9_-]+$'"}


def test_anthropic_tool_result_after_tool_use_is_accepted(sim):
    msgs = USER + [TOOL_USE, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]
    r = an(sim, {"messages": msgs, "tools": AN_TOOLS}).json()
    assert r["stop_reason"] == "end_turn" and r["content"][0]["type"] == "text"


# ------------------------------------------------------------------ Gemini

def test_gemini_text_reply_with_thinking_usage(sim):
    r = gm(sim, GM_USER)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    cand = body["candidates"][0]
    assert cand["content"]["role"] == "model" and cand["finishReason"] == "STOP" and cand["index"] == 0
    assert len(cand["content"]["parts"][0]["text"].split()) == 12 and body["modelVersion"] == "gemini-2.5-flash"
    assert body["usageMetadata"] == {"promptTokenCount": 7, "candidatesTokenCount": 12, "totalTokenCount": 27,
                                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}],
                                     "thoughtsTokenCount": 8}
    assert b'"candidates": [{' in r.content  # Google's spacing: ": " after keys, none after commas


def test_gemini_non_thinking_model_has_no_thoughts(sim):
    usage = gm(sim, GM_USER, model="gemini-2.0-flash").json()["usageMetadata"]
    assert "thoughtsTokenCount" not in usage and usage["totalTokenCount"] == 19


def test_gemini_sse_stream_is_crlf_framed_with_cumulative_usage(sim):
    r = gm(sim, GM_USER, streaming=True)
    assert r.headers["content-type"].startswith("text/event-stream") and b"event:" not in r.content
    events = gm_events(r.content)
    counts = [e["usageMetadata"]["candidatesTokenCount"] for e in events]
    assert counts == list(range(1, 13)) and all(e["usageMetadata"]["thoughtsTokenCount"] == 8 for e in events)
    assert [("finishReason" in e["candidates"][0]) for e in events] == [False] * 11 + [True]
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == gm(sim, GM_USER).json()["candidates"][0]["content"]["parts"][0]["text"]


def test_gemini_stream_without_alt_sse_is_a_json_array(sim):
    r = requests.post(sim + "/v1beta/models/gemini-2.5-flash:streamGenerateContent", json=GM_USER,
                      headers=AUTH_GM, timeout=5)
    items = json.loads(r.content)
    assert len(items) == 12 and items[-1]["candidates"][0]["finishReason"] == "STOP"


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_function_call_whole_in_one_event(sim, stream):
    r = gm(sim, dict(GM_USER, tools=GM_TOOLS), streaming=stream)
    body = gm_events(r.content)[0] if stream else r.json()
    if stream:
        assert len(gm_events(r.content)) == 1
    cand = body["candidates"][0]
    part = cand["content"]["parts"][0]
    assert part["functionCall"] == {"name": "getWeather", "args": {"location": "example"}}
    assert "thoughtSignature" in part and cand["finishReason"] == "STOP"


def test_gemini_function_response_last_gets_text(sim):
    contents = GM_USER["contents"] + [
        {"role": "model", "parts": [{"functionCall": {"name": "getWeather", "args": {"location": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "getWeather", "response": {"t": 21}}}]}]
    part = gm(sim, {"contents": contents, "tools": GM_TOOLS}).json()["candidates"][0]["content"]["parts"][0]
    assert "text" in part


def test_gemini_json_mime_type_answers_with_the_response_schemas_example(sim):
    config = {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}}}}
    r = gm(sim, dict(GM_USER, generationConfig=config)).json()
    assert json.loads(r["candidates"][0]["content"]["parts"][0]["text"]) == {"city": "example", "days": 1}


def test_gemini_json_mime_type_without_schema_answers_with_a_json_object(sim):
    text = gm(sim, GM_USER).json()["candidates"][0]["content"]["parts"][0]["text"]
    r = gm(sim, dict(GM_USER, generationConfig={"responseMimeType": "application/json"})).json()
    assert json.loads(r["candidates"][0]["content"]["parts"][0]["text"]) == {"answer": text}


def test_gemini_max_output_tokens(sim):
    r = gm(sim, dict(GM_USER, generationConfig={"maxOutputTokens": 4})).json()
    assert r["candidates"][0]["finishReason"] == "MAX_TOKENS" and r["usageMetadata"]["candidatesTokenCount"] == 4


def test_gemini_key_in_query_is_accepted(sim):
    assert gm(sim, GM_USER, headers={}, query="key=AIza-test").status_code == 200


def test_gemini_missing_key_is_403(sim):
    r = gm(sim, GM_USER, headers={})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    assert r.json()["error"]["code"] == 403


@pytest.mark.parametrize("body,message", [
    ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "Please use a valid role: user, model."),
    ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": "sunny"}}]}]},
     "function_response.response' (type.googleapis.com/google.protobuf.Struct)"),
    (dict(GM_USER, tools=[{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT",
                                                                                  "properties": {}}}]}]),
     "parameters.properties: should be non-empty for OBJECT type"),
    (dict(GM_USER, tools=[{"function_declarations": [{"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}}]}]),
     'Unknown name "additionalProperties"'),
    (dict(GM_USER, tools=[{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"url": {"type": "STRING", "format": "uri"}}}}]}]),
     "parameters.properties[url].value.format: only 'enum' and 'date-time' are supported for STRING type"),
    (dict(GM_USER, generationConfig={"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"n": {"type": "INTEGER", "enum": [1, 2]}}}}),
     "Invalid value at 'generation_config.response_schema.properties[n].value.enum[0]' (TYPE_STRING), 1"),
])
def test_gemini_validation(sim, body, message):
    r = gm(sim, body)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert message in r.json()["error"]["message"]


# ------------------------------------------------------------------ faults

PROVIDERS = ["openai", "anthropic", "gemini"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_status_429_with_retry_after(sim, provider):
    r = call(provider, sim, "status:code=429,retry_after=2")
    assert r.status_code == 429
    body = r.json()
    if provider == "openai":
        assert body["error"]["code"] == "rate_limit_exceeded" and r.headers["Retry-After"] == "2"
    elif provider == "anthropic":
        assert body["error"]["type"] == "rate_limit_error" and r.headers["Retry-After"] == "2"
    else:
        assert body["error"]["status"] == "RESOURCE_EXHAUSTED" and "Retry-After" not in r.headers
        assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in body["error"]["details"]


@pytest.mark.parametrize("provider,code,expected", [
    ("openai", 500, ("error", "type", "server_error")),
    ("anthropic", 529, ("error", "type", "overloaded_error")),
    ("gemini", 503, ("error", "status", "UNAVAILABLE")),
])
def test_fault_status_server_errors(sim, provider, code, expected):
    r = call(provider, sim, f"status:code={code}")
    outer, key, value = expected
    assert r.status_code == code and r.json()[outer][key] == value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_reset_drops_the_connection(sim, provider):
    with pytest.raises(requests.exceptions.ConnectionError):
        call(provider, sim, "reset")


def test_fault_hang_never_answers(sim):
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        call("openai", sim, "hang", timeout=0.5)
    assert time.monotonic() - started < 2


STREAM_PARSERS = {"openai": oa_events, "anthropic": an_events, "gemini": gm_events}
HEAD_EVENTS = {"openai": 1, "anthropic": 3, "gemini": 0}  # events before the first content event


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_cut_closes_mid_stream(sim, provider):
    got, clean = partial(call(provider, sim, "cut:after=3", streaming=True, stream=True))
    assert not clean and len(STREAM_PARSERS[provider](got)) == HEAD_EVENTS[provider] + 3


def test_fault_cut_non_stream_sends_half_a_body(sim):
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        call("openai", sim, "cut").json()


def test_fault_stall_pauses_then_finishes(sim):
    resp = call("openai", sim, "stall:after=2,ms=400", streaming=True, stream=True)
    stamps = []
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            stamps.append((time.monotonic(), line))
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    assert stamps[-1][1] == b"data: [DONE]" and max(gaps) >= 0.35 and gaps.index(max(gaps)) == 2


def test_fault_stall_without_ms_waits_until_the_client_leaves(sim):
    resp = call("anthropic", sim, "stall:after=1", streaming=True, stream=True, timeout=0.5)
    with pytest.raises(requests.exceptions.ConnectionError):
        partial(resp)


def test_fault_slow_first_delays_the_first_event(sim):
    started = time.monotonic()
    resp = call("anthropic", sim, "slow_first:ms=600", streaming=True, stream=True)
    headers_at = time.monotonic() - started
    next(resp.iter_content(None))
    assert headers_at < 0.4 and time.monotonic() - started >= 0.6


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_malformed_inserts_one_bad_event(sim, provider):
    raw = call(provider, sim, "malformed:after=1", streaming=True).content
    sep = b"\r\n\r\n" if provider == "gemini" else b"\n\n"
    datas = [b.split(b"data: ", 1)[1] for b in raw.split(sep) if b"data: " in b]
    bad = []
    for i, d in enumerate(datas):
        try:
            json.loads(d)
        except ValueError:
            bad.append(i)
    assert bad == ([HEAD_EVENTS[provider] + 1] if provider != "openai" else [2, len(datas) - 1])


def test_fault_no_done_omits_the_sentinel(sim):
    events = oa_events(call("openai", sim, "no_done", streaming=True).content)
    assert "[DONE]" not in events and json.loads(events[-1])["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("provider,check", [
    ("openai", lambda e: json.loads(e[-1])["error"]["type"] == "server_error"),
    ("anthropic", lambda e: e[-1] == ("error", '{"type": "error", "error": {"type": "overloaded_error", '
                                               '"message": "Overloaded"}}')),
    ("gemini", lambda e: e[-1]["error"]["status"] == "UNAVAILABLE"),
])
def test_fault_error_event_mid_stream(sim, provider, check):
    events = STREAM_PARSERS[provider](call(provider, sim, "error_event:after=2", streaming=True).content)
    assert check(events) and len(events) == HEAD_EVENTS[provider] + 3


@pytest.mark.parametrize("provider,needle", [("openai", "context_length_exceeded"), ("anthropic", "prompt is too long"),
                                             ("gemini", "exceeds the maximum number of tokens")])
def test_fault_context_length(sim, provider, needle):
    r = call(provider, sim, "context_length")
    assert r.status_code == 400 and needle in r.text


def test_fault_content_policy_openai_rejects(sim):
    r = call("openai", sim, "content_policy")
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"


def test_fault_content_policy_anthropic_refuses(sim):
    r = call("anthropic", sim, "content_policy").json()
    assert r["stop_reason"] == "refusal" and r["content"] == []


def test_fault_content_policy_gemini_blocks_the_prompt(sim):
    r = call("gemini", sim, "content_policy").json()
    assert "candidates" not in r and r["promptFeedback"]["blockReason"] == "SAFETY"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_reject_prefill(sim, provider):
    if provider == "openai":
        r = oa(sim, {"model": "gpt-4o", "messages": USER + [{"role": "assistant", "content": "It"}]}, "reject_prefill")
    elif provider == "anthropic":
        r = an(sim, {"messages": USER + [{"role": "assistant", "content": "It"}]}, "reject_prefill")
    else:
        contents = GM_USER["contents"] + [{"role": "model", "parts": [{"text": "It"}]}]
        r = gm(sim, {"contents": contents}, fault="reject_prefill")
    assert r.status_code == 400 and call(provider, sim, "reject_prefill").status_code == 200


@pytest.mark.parametrize("provider,status", [("openai", 401), ("anthropic", 401), ("gemini", 400)])
def test_fault_bad_key(sim, provider, status):
    r = call(provider, sim, "bad_key")
    assert r.status_code == status and ("invalid" in r.text.lower())


def test_fault_syntax_error_is_reported(sim):
    r = call("openai", sim, "explode:now=1")
    assert r.status_code == 400 and "unknown fault kind" in r.json()["error"]


# ------------------------------------------------------------------ control API

def rules(base, *specs):
    return requests.post(base + "/_sim/rules", json={"rules": list(specs)}, timeout=5)


def test_rules_apply_times_then_stop(sim):
    assert rules(sim, {"provider": "openai", "model": "gpt-4o-mini", "fault": "status:code=503", "times": 2}).ok
    assert [call("openai", sim).status_code for _ in range(3)] == [503, 503, 200]


def test_rules_filter_by_provider_and_model(sim):
    rules(sim, {"provider": "anthropic", "model": None, "fault": "status:code=529", "times": None})
    assert call("openai", sim).status_code == 200 and call("gemini", sim).status_code == 200
    assert [call("anthropic", sim).status_code for _ in range(2)] == [529, 529]
    assert requests.get(sim + "/_sim/rules", timeout=5).json()["rules"][0]["hits"] == 2


def test_rules_delete_clears(sim):
    rules(sim, {"provider": None, "model": None, "fault": "status:code=500", "times": None})
    requests.delete(sim + "/_sim/rules", timeout=5)
    assert call("gemini", sim).status_code == 200


def test_rules_reject_bad_specs(sim):
    assert rules(sim, {"provider": "cohere", "fault": "hang"}).status_code == 400
    assert rules(sim, {"fault": "status:colour=red"}).status_code == 400


def test_stats_count_every_attempt_per_provider_and_model(sim):
    rules(sim, {"provider": "openai", "fault": "status:code=429", "times": 1})
    call("openai", sim), call("openai", sim), call("anthropic", sim), call("gemini", sim, headers={})
    stats = requests.get(sim + "/_sim/stats", timeout=5).json()
    assert stats == {"requests": {"openai:gpt-4o-mini": 2, "anthropic:claude-sonnet-4-5": 1,
                                  "gemini:gemini-2.5-flash": 1}, "total": 4}
    requests.post(sim + "/_sim/reset", timeout=5)
    assert requests.get(sim + "/_sim/stats", timeout=5).json() == {"requests": {}, "total": 0}


def test_last_request_is_recorded(sim):
    an(sim, {"messages": USER + [{"role": "assistant", "content": "It is"}]})
    last = requests.get(sim + "/_sim/last", params={"provider": "anthropic", "model": "claude-sonnet-4-5"},
                        timeout=5).json()
    assert last["body"]["messages"][-1] == {"role": "assistant", "content": "It is"}
    assert last["headers"]["anthropic-version"] == "2023-06-01" and last["path"] == "/v1/messages"
    assert requests.get(sim + "/_sim/last", params={"provider": "gemini"}, timeout=5).status_code == 404


def test_models_lists_per_provider(sim):
    assert requests.get(sim + "/v1/models", headers=AUTH_AN, timeout=5).json()["data"][0]["type"] == "model"
    names = [m["name"] for m in requests.get(sim + "/v1beta/models", headers=AUTH_GM, timeout=5).json()["models"]]
    assert "models/gemini-2.5-flash" in names


# ------------------------------------------------------------------ command-line options

@pytest.fixture(scope="module")
def tuned():
    proc, base = spawn_process(["--tokens", "5", "--tokens-per-second", "50", "--latency-ms", "100", "--seed", "7",
                         "--fault", "status:code=503"])
    yield base
    proc.terminate()
    proc.wait(5)


def test_cli_default_fault_applies_and_none_overrides_it(tuned):
    assert call("openai", tuned).status_code == 503
    assert call("openai", tuned, "none").status_code == 200


def test_cli_tokens_pace_latency_and_seed(sim, tuned):
    started = time.monotonic()
    events = oa_events(call("openai", tuned, "none", streaming=True).content)
    elapsed = time.monotonic() - started
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert len(text.split()) == 5 and elapsed >= 0.1 + 5 / 50 - 0.02
    assert text != call("openai", sim).json()["choices"][0]["message"]["content"][:len(text)]
