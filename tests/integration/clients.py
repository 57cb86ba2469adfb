"""Shared by the real-client suites (test_clients_*.py): the models, the tool, and the checks that a
reply is exactly what OpenAI would have sent, whichever provider answered."""
import json

import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, Field

# One model per wire format; the client code is the same for all three.
MODELS = ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash")
PROVIDER = {"gpt-4o-mini": "openai", "claude-haiku-4-5": "anthropic", "gemini-2.5-flash": "gemini"}

QUESTION = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the compatibility suite"}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city", "parameters": WEATHER_PARAMETERS}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class GetWeather(BaseModel):
    """The current weather in a city"""
    city: str = Field(description="The city")
    unit: str = Field(description="celsius or fahrenheit")


class Answer(BaseModel):
    """A structured answer"""
    title: str
    count: int
    tags: list[str]


def check_tool_arguments(arguments):
    """Arguments are a JSON object carrying every field the schema requires, with the schema's types."""
    args = json.loads(arguments)
    assert isinstance(args, dict), arguments
    assert set(WEATHER_PARAMETERS["required"]) <= set(args), args
    assert isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit"), args
    return args


# ---------------------------------------------------------------- the simulator's view

def served_only_by(simulator, model):
    """Every upstream request of the test went to this model's own provider: nothing failed over."""
    stats = requests.get(simulator + "/_sim/stats", timeout=5).json()["requests"]
    assert stats, "no upstream request was made"
    assert set(stats) == {f"{PROVIDER[model]}:{model}"}, stats


def upstream(simulator, model):
    """The last request the gateway sent upstream for `model`: method, path, headers, body."""
    resp = requests.get(simulator + "/_sim/last", params={"provider": PROVIDER[model], "model": model}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---------------------------------------------------------------- raw wire checks

def check_completion_body(body, model):
    """A non-streamed body: parses as the SDK's ChatCompletion and has OpenAI's required shape."""
    parsed = ChatCompletion.model_validate(body)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == model and isinstance(body["created"], int)
    assert [c["index"] for c in body["choices"]] == [0]
    choice = body["choices"][0]
    assert {"index", "message", "finish_reason", "logprobs"} <= set(choice)
    assert choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    return parsed


def sse_events(resp):
    """Every `data:` payload of an SSE response, in order, as text; anything else on the wire fails."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for block in resp.text.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ") and "\n" not in block, repr(block)
        events.append(block[len("data: "):])
    return events


def check_stream(events, model, kind, include_usage=True):
    """OpenAI's stream sequence, exactly: returns the chunks (usage chunk excluded) and the usage.

    role chunk first; then only `content` (kind "text") or only `tool_calls` (kind "tools") deltas;
    an empty-delta finish chunk; the usage chunk with `choices: []` when asked; then `[DONE]`.
    """
    assert events[-1] == "[DONE]", events[-3:]
    assert "[DONE]" not in events[:-1]
    raw = [json.loads(e) for e in events[:-1]]
    for data in raw:
        ChatCompletionChunk.model_validate(data)
        assert data["object"] == "chat.completion.chunk" and data["model"] == model
        assert "error" not in data
    assert len({d["id"] for d in raw}) == 1 and raw[0]["id"].startswith("chatcmpl-")
    assert len({d["created"] for d in raw}) == 1
    usage = None
    if include_usage:
        last = raw.pop()
        assert last["choices"] == [] and last.get("usage"), last
        usage = last["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    for data in raw:
        assert len(data["choices"]) == 1 and data["choices"][0]["index"] == 0, data
        assert data.get("usage") is None, data
    first, *middle, finish = raw
    assert first["choices"][0]["delta"].get("role") == "assistant", first
    assert first["choices"][0]["finish_reason"] is None
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"], finish
    allowed = {"content"} if kind == "text" else {"tool_calls"}
    for data in middle:
        choice = data["choices"][0]
        assert set(choice["delta"]) == allowed and choice["finish_reason"] is None, data
        assert "role" not in choice["delta"]
    return raw, usage


def streamed_text(chunks):
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def accumulate_tool_calls(deltas):
    """Tool-call deltas merged by index, as the SDK does: id/type/name once, arguments concatenated."""
    calls = {}
    for delta in deltas:
        for part in delta.get("tool_calls") or ():
            call = calls.setdefault(part["index"], {"id": None, "type": None, "name": None, "arguments": ""})
            for key in ("id", "type"):
                if part.get(key):
                    assert call[key] is None, f"{key} sent twice for call {part['index']}"
                    call[key] = part[key]
            function = part.get("function") or {}
            if function.get("name"):
                assert call["name"] is None, "name sent twice"
                call["name"] = function["name"]
            call["arguments"] += function.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]
