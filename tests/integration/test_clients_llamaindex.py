"""LlamaIndex's OpenAILike, unchanged, against one gunicorn + gevent gateway: only `model=` differs.

Each test runs for gpt-4o-mini, claude-haiku-4-5 and gemini-2.5-flash through the provider simulator;
after each, the simulator confirms that the model's own provider answered.
"""
import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike

from tests.integration.clients import MODELS, Answer, served_only_by

MESSAGES = [ChatMessage(role=MessageRole.SYSTEM, content="You are terse."),
            ChatMessage(role=MessageRole.USER, content="Say hello to the compatibility suite")]


def get_weather(city: str, unit: str) -> str:
    """The current weather in a city (unit: celsius or fahrenheit)."""
    return f"21 degrees {unit} in {city}"


WEATHER_TOOL = FunctionTool.from_defaults(fn=get_weather)


@pytest.fixture(scope="module")
def gw(start_module_gateway, simulator):
    return start_module_gateway(simulator)


@pytest.fixture(params=MODELS)
def model(request, simulator):
    yield request.param
    served_only_by(simulator, request.param)


@pytest.fixture
def llm(gw, model):
    return OpenAILike(model=model, api_base=gw.base_url + "/v1", api_key=gw.key, is_chat_model=True,
                      is_function_calling_model=True, context_window=128000, max_retries=0, timeout=10)


def check_raw_usage(raw):
    usage = raw.usage if hasattr(raw, "usage") else raw["usage"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_chat(llm, model):
    resp = llm.chat(MESSAGES)
    assert resp.message.role == MessageRole.ASSISTANT
    assert isinstance(resp.message.content, str) and resp.message.content.strip()
    assert resp.raw.model == model and resp.raw.choices[0].finish_reason == "stop"
    check_raw_usage(resp.raw)


def test_stream_chat_reassembles_chats_answer(llm):
    answer = llm.chat(MESSAGES).message.content
    chunks = list(llm.stream_chat(MESSAGES))
    assert "".join(c.delta or "" for c in chunks) == answer
    assert chunks[-1].message.content == answer


def test_async_chat_and_stream_chat(llm):
    async def run():
        answer = await llm.achat(MESSAGES)
        chunks = [c async for c in await llm.astream_chat(MESSAGES)]
        return answer, chunks

    answer, chunks = asyncio.run(run())
    assert "".join(c.delta or "" for c in chunks) == answer.message.content


def test_chat_with_tools_returns_the_tool_call(llm):
    resp = llm.chat_with_tools([WEATHER_TOOL], user_msg="What is the weather in Paris?", tool_required=True)
    (call,) = llm.get_tool_calls_from_response(resp, error_on_no_tool_call=True)
    assert call.tool_name == "get_weather" and call.tool_id
    assert set(call.tool_kwargs) == {"city", "unit"}
    assert WEATHER_TOOL(**call.tool_kwargs).content


def test_stream_chat_with_tools_accumulates_the_tool_call(llm):
    last = None
    for last in llm.stream_chat_with_tools([WEATHER_TOOL], user_msg="What is the weather in Paris?",
                                           tool_required=True):
        pass
    (call,) = llm.get_tool_calls_from_response(last, error_on_no_tool_call=True)
    assert call.tool_name == "get_weather" and set(call.tool_kwargs) == {"city", "unit"}


def test_a_tool_result_sent_back_gets_a_text_answer(llm):
    history = [ChatMessage(role=MessageRole.USER, content="What is the weather in Paris?")]
    resp = llm.chat_with_tools([WEATHER_TOOL], chat_history=history, tool_required=True)
    (call,) = llm.get_tool_calls_from_response(resp)
    history += [resp.message, ChatMessage(role=MessageRole.TOOL, content=WEATHER_TOOL(**call.tool_kwargs).content,
                                          additional_kwargs={"tool_call_id": call.tool_id})]
    final = llm.chat_with_tools([WEATHER_TOOL], chat_history=history)
    assert llm.get_tool_calls_from_response(final, error_on_no_tool_call=False) == []
    assert final.message.content.strip()


def test_structured_llm_fills_the_pydantic_model(llm):
    structured = llm.as_structured_llm(Answer)
    resp = structured.chat([ChatMessage(role=MessageRole.USER, content="Summarise Paris.")])
    assert isinstance(resp.raw, Answer)
