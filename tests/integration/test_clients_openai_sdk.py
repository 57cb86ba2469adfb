"""The OpenAI Python SDK, unchanged, against one gunicorn + gevent gateway: only `model=` differs.

Each test runs for gpt-4o-mini (OpenAI), claude-haiku-4-5 (Anthropic) and gemini-2.5-flash (Gemini)
through the provider simulator, whose replies are deterministic per conversation, so a streamed
answer can be compared with the non-streamed one word for word. After each test the simulator
confirms that the model's own provider answered (no failover hid a translation error).
"""
import asyncio
import json
from typing import Literal

import openai
import pytest
import requests
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, Field

from gateway.extensions import make_engine
from gateway.store.keys import create_key
from tests.integration.clients import (MODELS, PROVIDER, QUESTION, TIME_TOOL, WEATHER_PARAMETERS, WEATHER_QUESTION,
                                       WEATHER_TOOL, Answer, GetWeather, accumulate_tool_calls,
                                       check_completion_body, check_stream, check_tool_arguments, served_only_by,
                                       sse_events, streamed_text, upstream)

NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def gw(start_module_gateway, simulator):
    return start_module_gateway(simulator)


@pytest.fixture(scope="module")
def client(gw):
    return OpenAI(base_url=gw.base_url + "/v1", api_key=gw.key, max_retries=0, timeout=10)


@pytest.fixture
def aclient(gw):
    return AsyncOpenAI(base_url=gw.base_url + "/v1", api_key=gw.key, max_retries=0, timeout=10)


@pytest.fixture(params=MODELS)
def model(request, simulator):
    yield request.param
    served_only_by(simulator, request.param)


def post(gw, body, stream=False):
    return requests.post(gw.base_url + "/v1/chat/completions", json=body, headers=gw.headers, stream=stream,
                         timeout=10)


def check_usage(usage):
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def tool_turn(client, model):
    """A first turn that calls get_weather, and the messages that send its result back."""
    done = client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                          tool_choice="required")
    call = done.choices[0].message.tool_calls[0]
    assistant = done.choices[0].message.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}
    return call, WEATHER_QUESTION + [assistant, result]


# ---------------------------------------------------------------- text

def test_create_answers_with_consistent_usage(client, model):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=QUESTION)
    done = raw.parse()
    check_completion_body(raw.http_response.json(), model)
    assert raw.headers["x-provider"] == PROVIDER[model]
    assert done.model == model and done.object == "chat.completion"
    choice = done.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.message.tool_calls is None
    check_usage(done.usage)


def test_stream_reassembles_the_same_answer_and_ends_with_usage(client, model):
    done = client.chat.completions.create(model=model, messages=QUESTION)
    chunks = list(client.chat.completions.create(model=model, messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    *answer, last = chunks
    assert "".join(c.choices[0].delta.content or "" for c in answer) == done.choices[0].message.content
    assert answer[-1].choices[0].finish_reason == "stop"
    assert last.choices == [] and last.usage is not None
    check_usage(last.usage)
    assert last.usage.model_dump() == done.usage.model_dump()  # same conversation, same count
    assert len({c.id for c in chunks}) == 1 and all(c.model == model for c in chunks)


def test_a_stream_without_include_usage_sends_no_usage(client, model):
    chunks = list(client.chat.completions.create(model=model, messages=QUESTION, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_client_creates_and_streams(aclient, model):
    async def run():
        async with aclient:
            done = await aclient.chat.completions.create(model=model, messages=QUESTION)
            stream = await aclient.chat.completions.create(model=model, messages=QUESTION, stream=True,
                                                           stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            return done, chunks

    done, chunks = asyncio.run(run())
    check_usage(done.usage)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == done.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == done.usage.model_dump()


def test_async_stream_helper_reassembles_the_answer(aclient, model):
    async def run():
        async with aclient:
            done = await aclient.chat.completions.create(model=model, messages=QUESTION)
            async with aclient.chat.completions.stream(model=model, messages=QUESTION) as stream:
                deltas = [e.delta async for e in stream if e.type == "content.delta"]
                final = await stream.get_final_completion()
            return done, deltas, final

    done, deltas, final = asyncio.run(run())
    assert "".join(deltas) == final.choices[0].message.content == done.choices[0].message.content


# ---------------------------------------------------------------- tools

@pytest.mark.parametrize("tool_choice", ["auto", "required", NAMED])
def test_tool_call(client, model, tool_choice):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=WEATHER_QUESTION,
                                                           tools=[WEATHER_TOOL], tool_choice=tool_choice)
    check_completion_body(raw.http_response.json(), model)
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    check_tool_arguments(call.function.arguments)


def test_named_tool_choice_picks_that_tool(client, model):
    done = client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[TIME_TOOL, WEATHER_TOOL],
                                          tool_choice=NAMED)
    assert [c.function.name for c in done.choices[0].message.tool_calls] == ["get_weather"]


def test_streamed_tool_call_accumulates_to_the_non_streamed_one(client, model):
    done = client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                          tool_choice="required")
    chunks = list(client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                                 tool_choice="required", stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.model_dump(exclude_none=True) for c in chunks if c.choices]
    (call,) = accumulate_tool_calls(deltas)
    expected = done.choices[0].message.tool_calls[0]
    assert call["type"] == "function" and call["name"] == "get_weather" and call["id"]
    assert json.loads(call["arguments"]) == json.loads(expected.function.arguments)
    check_tool_arguments(call["arguments"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_the_sdk_stream_helper_accumulates_a_strict_tool_call(client, model):
    # The helper rebuilds the message from the deltas and parses the arguments into the pydantic model.
    with client.chat.completions.stream(model=model, messages=WEATHER_QUESTION, tool_choice="required",
                                        tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")]) \
            as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    assert "content.delta" not in events  # as from OpenAI: a call-only answer streams no content at all
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(call.function.parsed_arguments, GetWeather)


def test_a_tool_result_sent_back_gets_a_text_answer(client, simulator, model):
    call, messages = tool_turn(client, model)
    done = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    choice = done.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content.strip()
    check_usage(done.usage)
    streamed = list(client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL],
                                                   stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == choice.message.content
    sent = upstream(simulator, model)["body"]
    check_tool_result_upstream(model, sent, call)


def check_tool_result_upstream(model, sent, call):
    """The tool result went up in the provider's own shape, tied to the call it answers."""
    provider = PROVIDER[model]
    if provider == "openai":
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id,
                                        "content": '{"temperature": 21, "sky": "clear"}'}
        assert sent["messages"][-2]["tool_calls"][0]["id"] == call.id
    elif provider == "anthropic":
        use, result = sent["messages"][-2], sent["messages"][-1]
        assert use["role"] == "assistant" and use["content"][-1] == {
            "type": "tool_use", "id": call.id, "name": "get_weather", "input": json.loads(call.function.arguments)}
        assert result == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                       "content": '{"temperature": 21, "sky": "clear"}'}]}
    else:
        model_turn, user_turn = sent["contents"][-2], sent["contents"][-1]
        (part,) = model_turn["parts"]
        assert model_turn["role"] == "model" and part["functionCall"] == {
            "name": "get_weather", "args": json.loads(call.function.arguments)}
        assert part["thoughtSignature"]  # carried back in the tool-call id, as Gemini 2.5 requires
        assert user_turn == {"role": "user", "parts": [{"functionResponse": {
            "name": "get_weather", "response": {"temperature": 21, "sky": "clear"}}}]}


def test_tools_reach_the_provider_in_its_own_format(client, simulator, model):
    client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[TIME_TOOL, WEATHER_TOOL],
                                   tool_choice=NAMED)
    sent = upstream(simulator, model)
    body, provider = sent["body"], PROVIDER[model]
    if provider == "openai":
        assert sent["path"] == "/v1/chat/completions"
        assert body["tools"] == [TIME_TOOL, WEATHER_TOOL] and body["tool_choice"] == NAMED
    elif provider == "anthropic":
        assert sent["path"] == "/v1/messages" and sent["headers"]["anthropic-version"]
        assert body["tools"][1] == {"name": "get_weather", "description": "The current weather in a city",
                                    "input_schema": WEATHER_PARAMETERS}
        assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
        assert body["max_tokens"] > 0 and "stream" not in body
    else:
        assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
        (tools,) = body["tools"]
        assert tools["functionDeclarations"][1] == {
            "name": "get_weather", "description": "The current weather in a city",
            "parameters": {"type": "OBJECT", "properties": {
                "city": {"type": "STRING", "description": "The city"},
                "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}
        assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                                "allowedFunctionNames": ["get_weather"]}}


@pytest.mark.parametrize("tool_choice, anthropic, gemini", [
    ("auto", {"type": "auto"}, {"mode": "AUTO"}),
    ("required", {"type": "any"}, {"mode": "ANY"}),
    ("none", {"type": "none"}, {"mode": "NONE"}),
])
def test_tool_choice_is_mapped(client, simulator, model, tool_choice, anthropic, gemini):
    done = client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                          tool_choice=tool_choice)
    body = upstream(simulator, model)["body"]
    expected = {"openai": tool_choice, "anthropic": anthropic, "gemini": gemini}[PROVIDER[model]]
    got = {"openai": body.get("tool_choice"), "anthropic": body.get("tool_choice"),
           "gemini": (body.get("toolConfig") or {}).get("functionCallingConfig")}[PROVIDER[model]]
    assert got == expected
    if tool_choice == "none":
        assert done.choices[0].finish_reason == "stop" and done.choices[0].message.content


# ---------------------------------------------------------------- JSON

def test_json_object_mode_returns_a_json_object(client, model):
    messages = [{"role": "user", "content": "Describe Paris as a JSON object."}]
    done = client.chat.completions.create(model=model, messages=messages, response_format={"type": "json_object"})
    choice = done.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert isinstance(json.loads(choice.message.content), dict)
    streamed = list(client.chat.completions.create(model=model, messages=messages, stream=True,
                                                   response_format={"type": "json_object"}))
    assert json.loads("".join(c.choices[0].delta.content or "" for c in streamed)) == json.loads(
        choice.message.content)


def test_parse_fills_a_pydantic_model_from_a_json_schema(client, model):
    done = client.chat.completions.parse(model=model, response_format=Answer,
                                         messages=[{"role": "user", "content": "Summarise Paris."}])
    assert isinstance(done.choices[0].message.parsed, Answer)
    assert done.choices[0].finish_reason == "stop"


class Listing(BaseModel):
    """JSON Schema Gemini's Schema refuses as written: a `format` other than date-time, an integer enum."""
    website: str = Field(json_schema_extra={"format": "uri"})
    stars: Literal[1, 2, 3]
    kind: Literal["hotel"]


def test_parse_with_formats_and_integer_enums_gemini_refuses(client, model):
    done = client.chat.completions.parse(model=model, response_format=Listing,
                                         messages=[{"role": "user", "content": "A hotel in Paris."}])
    assert isinstance(done.choices[0].message.parsed, Listing)


def test_an_email_address_as_user_is_accepted(client, model):
    # OpenAI's `user` is often the end user's e-mail; Anthropic refuses one in metadata.user_id.
    done = client.chat.completions.create(model=model, messages=QUESTION, user="alice@example.com")
    assert done.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------- the raw wire

def test_raw_body_is_a_valid_chat_completion(gw, model):
    for body in ({"model": model, "messages": QUESTION},
                 {"model": model, "messages": WEATHER_QUESTION, "tools": [WEATHER_TOOL], "tool_choice": "required"}):
        resp = post(gw, body)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
        assert isinstance(check_completion_body(resp.json(), model), ChatCompletion)


def test_raw_text_stream_follows_openais_sequence(gw, model):
    done = post(gw, {"model": model, "messages": QUESTION}).json()
    with post(gw, {"model": model, "messages": QUESTION, "stream": True,
                   "stream_options": {"include_usage": True}}, stream=True) as resp:
        chunks, usage = check_stream(sse_events(resp), model, "text")
    assert streamed_text(chunks) == done["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage == done["usage"]


def test_raw_text_stream_without_usage(gw, model):
    with post(gw, {"model": model, "messages": QUESTION, "stream": True}, stream=True) as resp:
        check_stream(sse_events(resp), model, "text", include_usage=False)


def test_raw_tool_stream_follows_openais_sequence(gw, model):
    body = {"model": model, "messages": WEATHER_QUESTION, "tools": [WEATHER_TOOL], "tool_choice": "required"}
    with post(gw, {**body, "stream": True, "stream_options": {"include_usage": True}}, stream=True) as resp:
        chunks, _ = check_stream(sse_events(resp), model, "tools")
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    first = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert first["index"] == 0 and first["id"] and first["type"] == "function"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}  # not "": no text comes
    assert first["function"]["name"] == "get_weather"
    (call,) = accumulate_tool_calls(c["choices"][0]["delta"] for c in chunks)
    check_tool_arguments(call["arguments"])


# ---------------------------------------------------------------- limits, stops and errors

def test_max_tokens_cuts_the_answer_with_finish_reason_length(client, model):
    whole = client.chat.completions.create(model=model, messages=QUESTION).choices[0].message.content
    done = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=3)
    choice = done.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == " ".join(whole.split()[:3])
    chunks = list(client.chat.completions.create(model=model, messages=QUESTION, max_completion_tokens=3,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_stop_sequence_ends_the_answer_before_it(client, model):
    words = client.chat.completions.create(model=model, messages=QUESTION).choices[0].message.content.split()
    stop = " " + words[3]
    done = client.chat.completions.create(model=model, messages=QUESTION, stop=[stop])
    expected = " ".join(words)[:" ".join(words).index(stop)]
    assert done.choices[0].message.content == expected and done.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model=model, messages=QUESTION, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_too_long_prompt_is_openais_context_length_error(client, simulator, model, stream):
    requests.post(simulator + "/_sim/rules", json={"rules": [{"provider": PROVIDER[model],
                                                              "fault": "context_length"}]}, timeout=5)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=QUESTION, stream=stream)
    err = caught.value
    assert err.status_code == 400 and err.code == "context_length_exceeded" and err.param == "messages"
    assert set(err.body) == {"message", "type", "param", "code"} and err.type == "invalid_request_error"


def test_parallel_tool_calls_false_is_mapped(client, simulator, model):
    client.chat.completions.create(model=model, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL],
                                   parallel_tool_calls=False)
    body = upstream(simulator, model)["body"]
    provider = PROVIDER[model]
    if provider == "openai":
        assert body["parallel_tool_calls"] is False
    elif provider == "anthropic":
        assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    else:
        assert "parallel_tool_calls" not in body  # Gemini has no such switch; the field is dropped


def test_the_stream_helper_parses_a_json_schema_answer(client, model):
    with client.chat.completions.stream(model=model, response_format=Answer,
                                        messages=[{"role": "user", "content": "Summarise Paris."}]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.done" in events
    assert isinstance(final.choices[0].message.parsed, Answer) and final.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------- history shapes real code sends

NOW_TOOL = {"type": "function", "function": {"name": "now", "description": "The current time",
                                             "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_without_parameters_gets_empty_object_arguments(client, model, stream):
    kwargs = {"model": model, "messages": [{"role": "user", "content": "What time is it?"}], "tools": [NOW_TOOL],
              "tool_choice": "required"}
    if stream:
        with client.chat.completions.stream(**kwargs) as events:
            done = events.get_final_completion()
    else:
        done = client.chat.completions.create(**kwargs)
    (call,) = done.choices[0].message.tool_calls
    assert call.function.name == "now" and json.loads(call.function.arguments) == {}


def test_parallel_tool_calls_in_history_are_answered(client, simulator, model):
    calls = [{"id": "call_paris", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}},
             {"id": "call_rome", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "celsius"}'}}]
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_paris", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_rome", "content": [{"type": "text", "text": "24C"}]}]
    done = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert done.choices[0].finish_reason == "stop" and done.choices[0].message.content.strip()
    body = upstream(simulator, model)["body"]
    if PROVIDER[model] == "anthropic":
        assert body["messages"][-1] == {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_paris", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_rome", "content": "24C"}]}
    elif PROVIDER[model] == "gemini":
        assert body["contents"][-1] == {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}},
            {"functionResponse": {"name": "get_weather", "response": {"content": "24C"}}}]}


def test_a_rate_limit_is_openais_429(client, simulator, model):
    requests.post(simulator + "/_sim/rules", json={"rules": [{"provider": PROVIDER[model],
                                                              "fault": "status:code=429"}]}, timeout=5)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=model, messages=QUESTION, extra_headers={"X-Gateway-Failover": "off"})
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"


def test_the_model_is_listed_and_retrievable(client, simulator, model):
    assert client.models.retrieve(model).id == model
    assert model in {m.id for m in client.models.list()}
    client.chat.completions.create(model=model, messages=QUESTION)  # served_only_by needs one request


# ---------------------------------------------------------------- answers from the gateway's cache

@pytest.fixture(scope="module")
def cached_headers(gw):
    key, _ = create_key(make_engine(gw.database_url), "clients-cached", cache_enabled=True)
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "Cache me"}]},
    {"messages": WEATHER_QUESTION, "tools": [WEATHER_TOOL], "tool_choice": "required"},
], ids=["text", "tools"])
def test_a_cached_answer_is_indistinguishable_from_a_live_one(gw, cached_headers, simulator, model, body):
    """Whole or streamed, live or replayed from the cache (whichever way it was stored): the same answer,
    in the same exact OpenAI shapes."""
    kind = "tools" if "tools" in body else "text"

    def whole(body):
        resp = requests.post(gw.base_url + "/v1/chat/completions", json=body, headers=cached_headers, timeout=10)
        return resp.headers.get("X-Cache-Hit"), check_completion_body(resp.json(), model)

    def streamed(body):
        with requests.post(gw.base_url + "/v1/chat/completions", headers=cached_headers, stream=True, timeout=10,
                           json={**body, "stream": True, "stream_options": {"include_usage": True}}) as resp:
            chunks, usage = check_stream(sse_events(resp), model, kind)
        calls = accumulate_tool_calls(c["choices"][0]["delta"] for c in chunks)
        usage = {k: v for k, v in usage.items() if k != "cost_usd"}
        finish = chunks[-1]["choices"][0]["finish_reason"]
        return resp.headers.get("X-Cache-Hit"), (streamed_text(chunks), calls, finish, usage)

    def as_stream(done):
        message = done.choices[0].message
        calls = [{"id": c.id, "type": c.type, "name": c.function.name, "arguments": c.function.arguments}
                 for c in message.tool_calls or ()]
        return message.content or "", calls, done.choices[0].finish_reason, done.usage.model_dump(exclude_none=True)

    first = {"model": model, **body}
    (hit1, live), (hit2, cached) = whole(first), whole(first)
    assert (hit1, hit2) == ("miss", "exact") and cached.id != live.id
    assert cached.choices[0].message == live.choices[0].message and cached.usage == live.usage
    hit3, replayed = streamed(first)  # stored whole, replayed as a stream
    assert hit3 == "exact" and replayed == as_stream(live)

    second = {**first, "messages": first["messages"] + [{"role": "user", "content": "Once more"}]}
    (hit4, live_stream), (hit5, cached_stream) = streamed(second), streamed(second)
    assert (hit4, hit5) == ("miss", "exact") and cached_stream == live_stream
    hit6, stored = whole(second)  # stored from a stream, answered whole
    assert hit6 == "exact" and as_stream(stored) == live_stream
    assert requests.get(simulator + "/_sim/stats", timeout=5).json()["total"] == 2  # the rest came from the cache
