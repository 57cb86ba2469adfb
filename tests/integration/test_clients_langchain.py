"""LangChain's ChatOpenAI, unchanged, against one gunicorn + gevent gateway: only `model=` differs.

Each test runs for gpt-4o-mini, claude-haiku-4-5 and gemini-2.5-flash through the provider simulator;
after each, the simulator confirms that the model's own provider answered.
"""
import asyncio
import json

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.integration.clients import MODELS, PROVIDER, Answer, GetWeather, served_only_by, upstream

MESSAGES = [SystemMessage("You are terse."), HumanMessage("Say hello to the compatibility suite")]
WEATHER = [HumanMessage("What is the weather in Paris?")]


@tool
def get_weather(city: str, unit: str) -> str:
    """The current weather in a city.

    Args:
        city: The city.
        unit: celsius or fahrenheit.
    """
    return json.dumps({"city": city, "temperature": 21, "unit": unit})


@pytest.fixture(scope="module")
def gw(start_module_gateway, simulator):
    return start_module_gateway(simulator)


@pytest.fixture(params=MODELS)
def model(request, simulator):
    yield request.param
    served_only_by(simulator, request.param)


@pytest.fixture
def llm(gw, model):
    return ChatOpenAI(model=model, base_url=gw.base_url + "/v1", api_key=gw.key, max_retries=0, timeout=10)


def check_usage(usage):
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def concat(chunks):
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    return whole


def test_invoke(llm, model):
    msg = llm.invoke(MESSAGES)
    assert isinstance(msg, AIMessage) and isinstance(msg.content, str) and msg.content.strip()
    assert msg.response_metadata["finish_reason"] == "stop"
    assert msg.response_metadata["model_name"] == model
    assert msg.tool_calls == [] and msg.invalid_tool_calls == []
    check_usage(msg.usage_metadata)


@pytest.mark.parametrize("stream_usage", [True, False])
def test_stream_concatenates_to_invokes_answer(llm, stream_usage):
    answer = llm.invoke(MESSAGES)
    chunks = list(llm.stream(MESSAGES, stream_usage=stream_usage))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == answer.content
    whole = concat(chunks)
    assert whole.content == answer.content and whole.response_metadata["finish_reason"] == "stop"
    if stream_usage:
        check_usage(whole.usage_metadata)
        assert whole.usage_metadata == answer.usage_metadata
    else:
        assert whole.usage_metadata is None


def test_async_invoke_and_stream(llm):
    async def run():
        answer = await llm.ainvoke(MESSAGES)
        chunks = [c async for c in llm.astream(MESSAGES, stream_usage=True)]
        return answer, chunks

    answer, chunks = asyncio.run(run())
    assert "".join(c.content for c in chunks) == answer.content
    check_usage(concat(chunks).usage_metadata)


@pytest.mark.parametrize("tool_choice, strict", [(None, None), ("any", None), ("get_weather", None), ("any", True)])
def test_bind_tools_invoke_parses_the_tool_call(llm, tool_choice, strict):
    msg = llm.bind_tools([get_weather], tool_choice=tool_choice, strict=strict).invoke(WEATHER)
    assert msg.response_metadata["finish_reason"] == "tool_calls" and msg.invalid_tool_calls == []
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather" and call["id"] and call["type"] == "tool_call"
    assert set(call["args"]) == {"city", "unit"} and all(isinstance(v, str) for v in call["args"].values())
    check_usage(msg.usage_metadata)


def test_bind_tools_stream_accumulates_the_tool_call(llm):
    bound = llm.bind_tools([get_weather], tool_choice="any")
    whole = concat(list(bound.stream(WEATHER, stream_usage=True)))
    assert whole.invalid_tool_calls == []
    (call,) = whole.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    assert call["args"] == bound.invoke(WEATHER).tool_calls[0]["args"]
    assert whole.response_metadata["finish_reason"] == "tool_calls"
    check_usage(whole.usage_metadata)


def test_a_tool_result_sent_back_gets_a_text_answer(llm):
    bound = llm.bind_tools([get_weather])
    first = bound.invoke(WEATHER)
    (call,) = first.tool_calls
    result = get_weather.invoke(call)  # a ToolMessage answering this call
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    final = bound.invoke(WEATHER + [first, result])
    assert final.tool_calls == [] and final.content.strip()
    assert final.response_metadata["finish_reason"] == "stop"
    streamed = concat(list(bound.stream(WEATHER + [first, result])))
    assert streamed.content == final.content


def test_a_pydantic_tool_goes_up_in_the_providers_format(llm, simulator, model):
    llm.bind_tools([GetWeather], tool_choice="GetWeather").invoke(WEATHER)
    body = upstream(simulator, model)["body"]
    provider = PROVIDER[model]
    if provider == "openai":
        assert body["tools"][0]["function"]["name"] == "GetWeather"
        assert body["tool_choice"] == {"type": "function", "function": {"name": "GetWeather"}}
    elif provider == "anthropic":
        (sent,) = body["tools"]
        assert sent["name"] == "GetWeather" and sent["input_schema"]["required"] == ["city", "unit"]
        assert body["tool_choice"] == {"type": "tool", "name": "GetWeather"}
    else:
        (declaration,) = body["tools"][0]["functionDeclarations"]
        assert declaration["name"] == "GetWeather"
        assert declaration["parameters"]["type"] == "OBJECT"
        assert body["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["GetWeather"]}


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_with_structured_output_fills_the_pydantic_model(llm, method):
    # json_schema is ChatOpenAI's default method; it asks for response_format json_schema (strict).
    structured = llm.with_structured_output(Answer, method=method, include_raw=True)
    out = structured.invoke([HumanMessage("Summarise Paris.")])
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"], Answer)
    check_usage(out["raw"].usage_metadata)


def test_with_structured_output_default_method(llm):
    answer = llm.with_structured_output(Answer).invoke([HumanMessage("Summarise Paris.")])
    assert isinstance(answer, Answer)


def test_with_structured_output_json_mode(llm):
    # json_mode asks only for *a* JSON object (no schema), so a dict schema is what it can promise.
    schema = {"title": "Anything", "type": "object", "properties": {}}
    out = llm.with_structured_output(schema, method="json_mode").invoke(
        [HumanMessage("Describe Paris as a JSON object.")])
    assert isinstance(out, dict)


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # LangChain's own, OpenAI too
def test_with_structured_output_streams(llm, method):
    parts = list(llm.with_structured_output(Answer, method=method).stream([HumanMessage("Summarise Paris.")]))
    assert isinstance(parts[-1], Answer)
