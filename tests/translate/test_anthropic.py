"""OpenAI ⇄ Anthropic translation: one case per test, literal inputs and outputs.

Examples come from shared/reference/provider-wire-formats.md (A.3, B.3, B.4, B.5, B.6).
"""
import copy
import hashlib
import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.translate.anthropic import (
    FINISH_REASON, AnthropicStream, error_from_anthropic, from_anthropic, to_anthropic)
from gateway.translate.common import FINISH_REASONS, UpstreamError

MODEL = "claude-sonnet-4-5"
ID = "chatcmpl-test123"
CREATED = 1741569952


# ---------------------------------------------------------------- helpers

def translate(**fields):
    """to_anthropic of a request whose only message is "Hi" unless `messages` is given."""
    request = {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return to_anthropic(request, MODEL, 1024)


def expected(**fields):
    """The Anthropic body `translate()` gives for the same fields."""
    return {"model": MODEL, "max_tokens": 1024,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], **fields}


def messages_of(*messages):
    return to_anthropic({"model": "claude", "messages": list(messages)}, MODEL, 1024)["messages"]


def check_completion(response):
    ChatCompletion.model_validate(response)
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(response)
    assert response["object"] == "chat.completion"
    choice = response["choices"][0]
    assert {"index", "message", "finish_reason", "logprobs"} <= set(choice)
    assert {"role", "content", "refusal"} <= set(choice["message"])
    assert choice["finish_reason"] in FINISH_REASONS
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} <= set(response["usage"])
    return response


def check_chunk(chunk):
    ChatCompletionChunk.model_validate(chunk)
    assert {"id", "object", "created", "model", "choices"} <= set(chunk)
    assert chunk["object"] == "chat.completion.chunk"
    for choice in chunk["choices"]:
        assert {"index", "delta", "finish_reason", "logprobs"} <= set(choice)
        assert choice["index"] == 0
        assert choice["finish_reason"] in FINISH_REASONS + (None,)
    return chunk


def c(delta, finish_reason=None):
    """An expected chunk."""
    return {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def parse_sse(text):
    """(event name, data) pairs from an Anthropic SSE transcript."""
    events, name = [], ""
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[len("data:"):])))
            name = ""
    return events


def run(events):
    """Feed every event; return (stream, chunks), every chunk validated."""
    stream = AnthropicStream(MODEL, ID, CREATED)
    chunks = [check_chunk(ch) for name, data in events for ch in stream.feed(name, data)]
    return stream, chunks


def assemble(chunks):
    """What an OpenAI client accumulates from a stream: content, tool calls, finish_reason."""
    content, calls, finish = None, {}, None
    for ch in chunks:
        for choice in ch["choices"]:
            delta = choice["delta"]
            if delta.get("content") is not None:
                content = (content or "") + delta["content"]
            for frag in delta.get("tool_calls") or []:
                call = calls.setdefault(frag["index"], {"id": None, "type": "function",
                                                        "function": {"name": None, "arguments": ""}})
                call["id"] = frag.get("id") or call["id"]
                call["function"]["name"] = frag.get("function", {}).get("name") or call["function"]["name"]
                call["function"]["arguments"] += frag.get("function", {}).get("arguments", "")
            finish = choice["finish_reason"] or finish
    return {"content": content or None, "tool_calls": [calls[k] for k in sorted(calls)] or None,
            "finish_reason": finish}


def message_start(input_tokens=10, output_tokens=1, **usage):
    return ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage}}})


def tool_start(index, id_, name):
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
        "type": "tool_use", "id": id_, "name": name, "input": {}}})


def json_delta(index, partial):
    return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                    "delta": {"type": "input_json_delta", "partial_json": partial}})


def text_start(index):
    return ("content_block_start", {"type": "content_block_start", "index": index,
                                    "content_block": {"type": "text", "text": ""}})


def text_delta(index, text):
    return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                    "delta": {"type": "text_delta", "text": text}})


def block_stop(index):
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(stop_reason, output_tokens):
    return [("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
            ("message_stop", {"type": "message_stop"})]


def usage_of(prompt, completion, cached=0, written=0, reasoning=0):
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


# ---------------------------------------------------------------- request: the reference's examples

WEATHER_SCHEMA = {"type": "object",
                  "properties": {"location": {"type": "string"},
                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                  "required": ["location"]}

# Reference A.3, verbatim.
A3_REQUEST = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image, and what is the weather in Boston?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo...", "detail": "auto"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc123", "type": "function",
             "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\"}"}}]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temp_f\": 41}"},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_current_weather", "description": "Get the current weather in a given location",
        "parameters": WEATHER_SCHEMA}}],
    "tool_choice": "auto",
    "max_completion_tokens": 300,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def test_a3_example_request():
    assert to_anthropic(A3_REQUEST, MODEL, 1024) == {
        "model": MODEL,
        "max_tokens": 300,
        "system": "You are a helpful assistant.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and what is the weather in Boston?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo..."}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                 "input": {"location": "Boston, MA"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_abc123", "content": "{\"temp_f\": 41}"}]},
        ],
        "tools": [{"name": "get_current_weather", "description": "Get the current weather in a given location",
                   "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "auto"},
        "stream": True,
    }


def test_b3_example_request():
    # The OpenAI request that should produce reference B.3 (system as a string: our choice).
    request = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "You are concise."},
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this picture, and what's the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo..."}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": "I'll check the weather.", "tool_calls": [
                {"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "content": "15°C, cloudy"},
            {"role": "user", "content": "Thanks. Summarise both."},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Get current weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}}],
        "tool_choice": "auto",
        "stop": "\n\nHuman:",
        "temperature": 0.7,
        "user": "u-1234",
        "max_tokens": 1024,
    }
    assert to_anthropic(request, MODEL, 4096) == {
        "model": MODEL,
        "max_tokens": 1024,
        "system": "You are concise.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this picture, and what's the weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo..."}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "I'll check the weather."},
                {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
                 "input": {"location": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "content": "15°C, cloudy"},
                {"type": "text", "text": "Thanks. Summarise both."}]},
        ],
        "tools": [{"name": "get_weather", "description": "Get current weather",
                   "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                    "required": ["location"]}}],
        "tool_choice": {"type": "auto"},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.7,
        "metadata": {"user_id": "u-1234"},
    }


def test_request_is_not_mutated_and_translation_is_deterministic():
    request = copy.deepcopy(A3_REQUEST)
    first = to_anthropic(request, MODEL, 1024)
    assert request == A3_REQUEST
    assert to_anthropic(request, MODEL, 1024) == first


# ---------------------------------------------------------------- request: system and roles

def test_minimal_request():
    assert translate() == expected()


def test_system_and_developer_anywhere_join_into_top_level_system():
    assert to_anthropic({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    ]}, MODEL, 1024) == expected(system="Be brief.\n\nAnswer in French.")


def test_empty_system_message_is_dropped():
    assert translate(messages=[{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]) == expected()


def test_system_message_alone_is_sent_as_the_user_turn():
    assert to_anthropic({"model": "m", "messages": [{"role": "system", "content": "Say hi"}]}, MODEL, 1024) == {
        "model": MODEL, "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]}


def test_system_and_developer_messages_alone_join_into_the_user_turn():
    assert messages_of({"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Say hi"}) == [
        {"role": "user", "content": [{"type": "text", "text": "Be brief.\n\nSay hi"}]}]


def test_system_message_with_an_empty_user_message_is_sent_as_the_user_turn():
    assert to_anthropic({"model": "m", "messages": [{"role": "system", "content": "Say hi"},
                                                    {"role": "user", "content": ""}]}, MODEL, 1024) == {
        "model": MODEL, "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]}


def test_empty_user_message_alone_raises_400():
    with pytest.raises(UpstreamError) as raised:
        translate(messages=[{"role": "user", "content": ""}])
    assert (raised.value.status, raised.value.error["param"]) == (400, "messages")


def test_consecutive_user_messages_merge_into_one_turn():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "user", "content": "there"}) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]


def test_consecutive_assistant_messages_merge_into_one_turn():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "One."},
                       {"role": "assistant", "content": "Two."}, {"role": "user", "content": "Go on"}) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
        {"role": "user", "content": [{"type": "text", "text": "Go on"}]}]


def test_system_between_user_messages_does_not_break_the_merge():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "system", "content": "x"},
                       {"role": "user", "content": "there"}) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]


def test_parallel_tool_results_share_one_user_turn_after_the_tool_use_turn():
    assert messages_of(
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "15C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "20C"}]},
    ) == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"c": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "w", "input": {"c": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "15C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "20C"}]}]


def test_tool_results_move_before_user_text_in_the_merged_turn():
    assert messages_of(
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "(also)"},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    )[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "ok"},
                                         {"type": "text", "text": "(also)"}]}


def test_empty_tool_result_content_is_omitted():
    assert messages_of({"role": "user", "content": "Hi"},
                       {"role": "assistant", "tool_calls": [
                           {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                       {"role": "tool", "tool_call_id": "call_1", "content": ""})[2] == {
        "role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1"}]}


def test_unsupported_role_raises_400():
    with pytest.raises(UpstreamError) as raised:
        translate(messages=[{"role": "function", "name": "f", "content": "x"}])
    assert (raised.value.status, raised.value.error["param"]) == (400, "messages[0].role")


# ---------------------------------------------------------------- request: assistant tool calls

def test_assistant_text_and_tool_calls_become_text_and_tool_use_blocks():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"})[1] == {
        "role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]}


def test_empty_arguments_become_empty_input():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}]})[1] == {
        "role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}]}


def test_invalid_json_arguments_raise_400():
    with pytest.raises(UpstreamError) as raised:
        messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}]})
    assert raised.value.status == 400
    assert raised.value.error["param"] == "messages[1].tool_calls"
    assert raised.value.error["type"] == "invalid_request_error"


def test_non_object_json_arguments_raise_400():
    with pytest.raises(UpstreamError) as raised:
        messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]})
    assert (raised.value.status, raised.value.error["param"]) == (400, "messages[1].tool_calls")


# A gemini-2.5-flash tool-call id as the gateway hands it out: call id + "__thought__" + signature.
GEMINI_ID = "call_abc123__thought__Q2lrQmNzamFmRksxLi4uPQ"
# Kimi K2's id shape, `functions.<name>:<index>` (vLLM and SGLang kimi_k2 parsers); Anthropic refuses "." and ":".
DOTTED_ID = "functions.get_weather:0"


def tool_round(id_):
    return messages_of({"role": "user", "content": "Weather?"},
                       {"role": "assistant", "tool_calls": [
                           {"id": id_, "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                       {"role": "tool", "tool_call_id": id_, "content": "cold"})


def test_gemini_signature_is_cut_from_the_tool_use_id():
    assert tool_round(GEMINI_ID)[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_abc123", "name": "w", "input": {}}]}


def test_gemini_signature_is_cut_from_the_tool_result_tool_use_id():
    assert tool_round(GEMINI_ID)[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_abc123", "content": "cold"}]}


def test_id_with_characters_anthropic_refuses_is_rewritten_in_the_tool_use():
    assert tool_round(DOTTED_ID)[1]["content"][0]["id"] == "functions_get_weather_0_79ac1aaab216b228"


def test_id_with_characters_anthropic_refuses_is_rewritten_the_same_in_the_tool_result():
    assert tool_round(DOTTED_ID)[2]["content"][0]["tool_use_id"] == "functions_get_weather_0_79ac1aaab216b228"


# ---------------------------------------------------------------- request: user content parts

def test_data_url_image_becomes_base64_image_block():
    assert messages_of({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}}]}) == [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}]}]


@pytest.mark.parametrize("url", ["data:image/png;base64,/9j/4AAQSkZJRg==", "data:image/jpg;base64,/9j/4AAQSkZJRg=="])
def test_data_url_image_goes_with_the_type_its_bytes_are(url):
    # Anthropic refuses a label the bytes contradict, and image/jpg; OpenAI takes both.
    part = {"type": "image_url", "image_url": {"url": url}}
    (block,) = messages_of({"role": "user", "content": [part]})[0]["content"]
    assert block["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}


def test_pdf_data_url_becomes_document_block():
    assert messages_of({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBERi0x"}}]}) == [
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]}]


def test_pdf_file_part_becomes_document_block():
    # How the OpenAI SDK sends a PDF; Gemini models took it, Claude answered 400 "Content part type 'file'".
    assert messages_of({"role": "user", "content": [
        {"type": "text", "text": "Summarise"},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]}) == [
        {"role": "user", "content": [
            {"type": "text", "text": "Summarise"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]}]


@pytest.mark.parametrize("file", [{"file_id": "file-abc"}, {"file_data": "data:text/csv;base64,YSxi"}])
def test_file_part_claude_cannot_take_raises_400(file):
    with pytest.raises(UpstreamError) as raised:
        messages_of({"role": "user", "content": [{"type": "file", "file": file}]})
    assert (raised.value.status, raised.value.error["param"]) == (400, "messages[0].content[0]")


def test_http_url_image_becomes_url_image_block():
    assert messages_of({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}) == [
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://example.com/a.png"}}]}]


def test_non_base64_data_url_raises_400():
    with pytest.raises(UpstreamError) as raised:
        messages_of({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}]})
    assert (raised.value.status, raised.value.error["param"]) == (400, "messages[0].content[0]")


def test_unsupported_content_part_raises_400():
    with pytest.raises(UpstreamError) as raised:
        messages_of({"role": "user", "content": [
            {"type": "text", "text": "Listen"},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]})
    assert (raised.value.status, raised.value.error["param"]) == (400, "messages[0].content[1]")


# ---------------------------------------------------------------- request: Anthropic's content rules

def test_empty_text_parts_are_dropped():
    assert messages_of({"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Hi"}]}) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_whitespace_only_text_parts_are_dropped():
    assert messages_of({"role": "user", "content": [{"type": "text", "text": " \n"}, {"type": "text", "text": "Hi"}]}) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_empty_assistant_message_is_dropped_and_neighbours_merge():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""},
                       {"role": "user", "content": "Hello?"}) == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Hello?"}]}]


def test_final_assistant_prefill_is_rstripped():
    assert messages_of({"role": "user", "content": "Name a colour."},
                       {"role": "assistant", "content": "The colour is \n"}) == [
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The colour is"}]}]


def test_non_final_assistant_text_keeps_its_whitespace():
    assert messages_of({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! "},
                       {"role": "user", "content": "Bye"})[1] == {
        "role": "assistant", "content": [{"type": "text", "text": "Hello! "}]}


# ---------------------------------------------------------------- request: parameters

def test_max_completion_tokens_becomes_max_tokens():
    assert translate(max_completion_tokens=300) == expected(max_tokens=300)


def test_legacy_max_tokens_becomes_max_tokens():
    assert translate(max_tokens=200) == expected(max_tokens=200)


def test_max_completion_tokens_wins_over_max_tokens():
    assert translate(max_completion_tokens=300, max_tokens=200) == expected(max_tokens=300)


def test_default_max_tokens_when_none_given():
    assert to_anthropic({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": None},
                        MODEL, 4096) == expected(max_tokens=4096)


def test_stop_string_becomes_stop_sequences_list():
    assert translate(stop="END") == expected(stop_sequences=["END"])


def test_stop_list_drops_whitespace_only_entries():
    assert translate(stop=["END", " ", "\n", "STOP"]) == expected(stop_sequences=["END", "STOP"])


def test_whitespace_only_stop_is_omitted():
    assert translate(stop="\n") == expected()


def test_temperature_above_one_is_clamped_to_one():
    assert translate(temperature=1.7) == expected(temperature=1.0)


def test_temperature_within_range_passes():
    assert translate(temperature=0.2) == expected(temperature=0.2)


def test_temperature_zero_passes():
    assert translate(temperature=0) == expected(temperature=0)


def test_top_p_passes():
    assert translate(top_p=0.9) == expected(top_p=0.9)


def test_top_p_is_dropped_when_temperature_is_given():
    assert translate(temperature=0.7, top_p=0.9) == expected(temperature=0.7)


def test_top_p_is_kept_when_temperature_is_null():
    assert translate(temperature=None, top_p=0.9) == expected(top_p=0.9)


def test_user_becomes_metadata_user_id():
    assert translate(user="user-42") == expected(metadata={"user_id": "user-42"})


@pytest.mark.parametrize("user", ["alice@example.com", "+1 415 555 0100", "4155550100", "Alice Smith"])
def test_a_user_anthropic_would_refuse_as_personal_is_sent_hashed(user):
    # Anthropic: 400 "metadata.user_id: user_id appears to contain an email address" (BerriAI/litellm#10106).
    user_id = translate(user=user)["metadata"]["user_id"]
    assert user_id == hashlib.sha256(user.encode()).hexdigest() and translate(user=user) == translate(user=user)


def test_safety_identifier_becomes_metadata_user_id():
    assert translate(safety_identifier="sid-1") == expected(metadata={"user_id": "sid-1"})


def test_user_wins_over_safety_identifier():
    assert translate(user="u", safety_identifier="s") == expected(metadata={"user_id": "u"})


def test_stream_true_passes():
    assert translate(stream=True, stream_options={"include_usage": True}) == expected(stream=True)


def test_stream_false_is_omitted():
    assert translate(stream=False) == expected()


def test_openai_only_fields_are_dropped():
    assert translate(seed=7, logprobs=True, top_logprobs=3, frequency_penalty=0.5, presence_penalty=0.5,
                     logit_bias={"50256": -100}, store=True, metadata={"k": "v"}, service_tier="auto",
                     response_format={"type": "text"}, n=1) == expected()


def test_null_fields_are_dropped():
    assert translate(temperature=None, top_p=None, stop=None, user=None, tools=None, tool_choice=None) == expected()


def test_n_above_one_raises_400():
    with pytest.raises(UpstreamError) as raised:
        translate(n=2)
    assert (raised.value.status, raised.value.error["param"]) == (400, "n")


# ---------------------------------------------------------------- request: tools

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Get weather",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Get weather",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_tools_become_name_description_input_schema():
    assert translate(tools=[TOOL]) == expected(tools=[ANTHROPIC_TOOL])


def test_tool_without_parameters_gets_empty_object_schema():
    assert translate(tools=[{"type": "function", "function": {"name": "now"}}]) == expected(
        tools=[{"name": "now", "input_schema": {"type": "object", "properties": {}}}])


@pytest.mark.parametrize("tool_choice, anthropic", [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice(tool_choice, anthropic):
    assert translate(tools=[TOOL], tool_choice=tool_choice) == expected(tools=[ANTHROPIC_TOOL], tool_choice=anthropic)


def test_unsupported_tool_choice_raises_400():
    with pytest.raises(UpstreamError) as raised:
        translate(tools=[TOOL], tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}})
    assert (raised.value.status, raised.value.error["param"]) == (400, "tool_choice")


def test_tool_choice_without_tools_is_dropped():
    assert translate(tool_choice="none") == expected()


def test_parallel_tool_calls_false_without_tool_choice_adds_auto():
    assert translate(tools=[TOOL], parallel_tool_calls=False) == expected(
        tools=[ANTHROPIC_TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": True})


def test_parallel_tool_calls_false_with_required():
    assert translate(tools=[TOOL], tool_choice="required", parallel_tool_calls=False) == expected(
        tools=[ANTHROPIC_TOOL], tool_choice={"type": "any", "disable_parallel_tool_use": True})


def test_parallel_tool_calls_false_with_none_adds_nothing():
    assert translate(tools=[TOOL], tool_choice="none", parallel_tool_calls=False) == expected(
        tools=[ANTHROPIC_TOOL], tool_choice={"type": "none"})


def test_parallel_tool_calls_true_adds_nothing():
    assert translate(tools=[TOOL], parallel_tool_calls=True) == expected(tools=[ANTHROPIC_TOOL])


def test_parallel_tool_calls_without_tools_is_dropped():
    assert translate(parallel_tool_calls=False) == expected()


# ---------------------------------------------------------------- request: JSON mode

PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
          "additionalProperties": False}


def test_json_schema_becomes_forced_json_tool():
    assert translate(response_format={"type": "json_schema", "json_schema": {
        "name": "person", "description": "A person", "schema": PERSON, "strict": True}}) == expected(
        tools=[{"name": "json_tool_call", "description": "A person",
                "input_schema": {**PERSON}}],
        tool_choice={"type": "tool", "name": "json_tool_call"})


def test_json_schema_without_schema_gets_empty_object_schema():
    assert translate(response_format={"type": "json_schema", "json_schema": {"name": "any"}}) == expected(
        tools=[{"name": "json_tool_call", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "json_tool_call"})


def test_json_object_becomes_forced_json_tool_with_any_object_schema():
    assert translate(response_format={"type": "json_object"}) == expected(
        tools=[{"name": "json_tool_call", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "json_tool_call"})


def test_json_mode_with_caller_tools_lets_the_model_call_any_tool():
    assert translate(tools=[TOOL], response_format={"type": "json_object"}) == expected(
        tools=[ANTHROPIC_TOOL, {"name": "json_tool_call", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "any"})


def test_json_mode_with_named_tool_choice_keeps_it():
    assert translate(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                     response_format={"type": "json_object"}) == expected(
        tools=[ANTHROPIC_TOOL, {"name": "json_tool_call", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "get_weather"})


def test_json_mode_with_tool_choice_none_forces_the_json_tool():
    assert translate(tools=[TOOL], tool_choice="none", response_format={"type": "json_object"}) == expected(
        tools=[ANTHROPIC_TOOL, {"name": "json_tool_call", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "json_tool_call"})


def test_json_mode_with_parallel_tool_calls_false():
    assert translate(response_format={"type": "json_object"}, parallel_tool_calls=False) == expected(
        tools=[{"name": "json_tool_call", "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "json_tool_call", "disable_parallel_tool_use": True})


# ---------------------------------------------------------------- response

# Reference B.4.
B4_RESPONSE = {
    "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "I'll check the current weather in Paris for you."},
        {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
         "input": {"location": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 377, "output_tokens": 65, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0, "service_tier": "standard"},
}


def anthropic_message(content, stop_reason="end_turn", usage=None):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 11, "output_tokens": 6}}


def completion_of(message, finish_reason, usage):
    return {"id": ID, "object": "chat.completion", "created": CREATED, "model": MODEL,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage}


def test_text_response():
    body = anthropic_message([{"type": "text", "text": "Hello there!"}])
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED)) == completion_of(
        {"role": "assistant", "content": "Hello there!", "refusal": None}, "stop", usage_of(11, 6))


def test_text_blocks_are_concatenated():
    body = anthropic_message([{"type": "text", "text": "Paris is "},
                              {"type": "text", "text": "the capital.", "citations": []}])
    assert from_anthropic(body, MODEL, ID, CREATED)["choices"][0]["message"]["content"] == "Paris is the capital."


def test_b4_text_and_tool_use_response():
    assert check_completion(from_anthropic(B4_RESPONSE, MODEL, ID, CREATED)) == completion_of(
        {"role": "assistant", "content": "I'll check the current weather in Paris for you.", "refusal": None,
         "tool_calls": [{"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
        "tool_calls", usage_of(377, 65))


def test_tool_use_only_response_has_null_content():
    body = anthropic_message([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Zürich"}}],
                             "tool_use")
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0] == {
        "index": 0, "logprobs": None, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Zürich\"}"}}]}}


def test_parallel_tool_use_response():
    body = anthropic_message([
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}], "tool_use")
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0]["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]


@pytest.mark.parametrize("stop_reason, finish_reason", [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
    ("some_future_reason", "stop"),
])
def test_stop_reason_maps_to_finish_reason(stop_reason, finish_reason):
    body = anthropic_message([{"type": "text", "text": "x"}], stop_reason)
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0]["finish_reason"] == finish_reason


def test_finish_reason_table_covers_every_documented_stop_reason():
    assert set(FINISH_REASON) == {"end_turn", "stop_sequence", "pause_turn", "max_tokens",
                                  "model_context_window_exceeded", "tool_use", "refusal"}
    assert set(FINISH_REASON.values()) <= set(FINISH_REASONS)


def test_empty_response_has_empty_string_content():
    body = anthropic_message([], "max_tokens")
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0]["message"] == {
        "role": "assistant", "content": "", "refusal": None}


def test_usage_with_cache_counters():
    body = anthropic_message([{"type": "text", "text": "Hi"}], usage={
        "input_tokens": 50, "output_tokens": 20, "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 3000, "service_tier": "standard"})
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["usage"] == {
        "prompt_tokens": 4050, "completion_tokens": 20, "total_tokens": 4070,
        "prompt_tokens_details": {"cached_tokens": 3000, "cache_write_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 0}}


def test_usage_with_null_cache_counters():
    body = anthropic_message([{"type": "text", "text": "Hi"}], usage={
        "input_tokens": 5, "output_tokens": 2, "cache_creation_input_tokens": None, "cache_read_input_tokens": None})
    assert from_anthropic(body, MODEL, ID, CREATED)["usage"] == usage_of(5, 2)


def test_usage_thinking_tokens_become_reasoning_tokens():
    body = anthropic_message([{"type": "text", "text": "Hi"}], usage={
        "input_tokens": 5, "output_tokens": 300, "output_tokens_details": {"thinking_tokens": 250}})
    assert from_anthropic(body, MODEL, ID, CREATED)["usage"] == usage_of(5, 300, reasoning=250)


def test_thinking_and_redacted_thinking_blocks_are_skipped():
    body = anthropic_message([
        {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"},
        {"type": "text", "text": "42."}])
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0]["message"] == {
        "role": "assistant", "content": "42.", "refusal": None}


def test_server_tool_blocks_are_skipped():
    body = anthropic_message([
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "text", "text": "Found it."}])
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0]["message"] == {
        "role": "assistant", "content": "Found it.", "refusal": None}


def test_json_mode_tool_input_becomes_content_with_stop():
    body = anthropic_message([{"type": "tool_use", "id": "toolu_9", "name": "json_tool_call",
                               "input": {"name": "Ada", "born": 1815}}], "tool_use")
    assert check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0] == {
        "index": 0, "logprobs": None, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "{\"name\": \"Ada\", \"born\": 1815}", "refusal": None}}


def test_json_mode_next_to_a_real_tool_call_keeps_tool_calls():
    body = anthropic_message([
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "toolu_2", "name": "json_tool_call", "input": {"a": 1}}], "tool_use")
    choice = check_completion(from_anthropic(body, MODEL, ID, CREATED))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "{\"a\": 1}"
    assert [call["id"] for call in choice["message"]["tool_calls"]] == ["toolu_1"]


# ---------------------------------------------------------------- stream: the reference's transcripts

# Reference B.5, verbatim (ant-py tests/lib/streaming/fixtures/basic_response.txt).
BASIC_RESPONSE = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}
"""

# Reference B.5, verbatim (ant-py tests/lib/streaming/fixtures/tool_use_response.txt, text shortened there).
TOOL_USE_RESPONSE = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I'll check the current weather in Paris for you."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","caller":{"type":"direct"},"input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"locati"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"on\\": \\"P"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ar"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}
"""


def test_basic_response_transcript_chunks():
    stream, chunks = run(parse_sse(BASIC_RESPONSE))
    assert chunks == [
        c({"role": "assistant", "content": ""}),
        c({"content": "Hello"}),
        c({"content": " there"}),
        c({"content": "!"}),
        c({}, "stop"),
    ]
    assert (stream.finish_reason, stream.done, stream.usage) == ("stop", True, usage_of(11, 6))


def test_tool_use_response_transcript_chunks():
    stream, chunks = run(parse_sse(TOOL_USE_RESPONSE))
    assert chunks == [
        c({"role": "assistant", "content": ""}),
        c({"content": "I'll check the current weather in Paris for you."}),
        c({"tool_calls": [{"index": 0, "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "{\"locati"}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "on\": \"P"}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "ar"}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}),
        c({}, "tool_calls"),
    ]
    assert (stream.finish_reason, stream.done, stream.usage) == ("tool_calls", True, usage_of(377, 65))


def test_basic_stream_reassembles_to_the_non_streaming_response():
    stream, chunks = run(parse_sse(BASIC_RESPONSE))
    response = from_anthropic(anthropic_message([{"type": "text", "text": "Hello there!"}]), MODEL, ID, CREATED)
    message = response["choices"][0]["message"]
    assert assemble(chunks) == {"content": message["content"], "tool_calls": message.get("tool_calls"),
                                "finish_reason": response["choices"][0]["finish_reason"]}
    assert stream.usage == response["usage"]


def test_tool_use_stream_reassembles_to_the_non_streaming_response():
    stream, chunks = run(parse_sse(TOOL_USE_RESPONSE))
    response = from_anthropic(B4_RESPONSE, MODEL, ID, CREATED)
    message = response["choices"][0]["message"]
    assert assemble(chunks) == {"content": message["content"], "tool_calls": message["tool_calls"],
                                "finish_reason": response["choices"][0]["finish_reason"]}
    assert stream.usage == response["usage"]


# ---------------------------------------------------------------- stream: other cases

PARALLEL_TOOLS = [
    message_start(),
    text_start(0), text_delta(0, "Both."), block_stop(0),
    tool_start(1, "toolu_A", "get_weather"), json_delta(1, ""), json_delta(1, "{\"city\": "),
    json_delta(1, "\"Paris\"}"), block_stop(1),
    tool_start(2, "toolu_B", "get_time"), json_delta(2, "{\"tz\": \"CET\"}"), block_stop(2),
    *message_end("tool_use", 40),
]


def test_parallel_tool_stream_counts_tool_calls_not_blocks():
    _, chunks = run(PARALLEL_TOOLS)
    assert chunks == [
        c({"role": "assistant", "content": ""}),
        c({"content": "Both."}),
        c({"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
        c({"tool_calls": [{"index": 1, "id": "toolu_B", "type": "function",
                           "function": {"name": "get_time", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 1, "function": {"arguments": "{\"tz\": \"CET\"}"}}]}),
        c({}, "tool_calls"),
    ]


def test_parallel_tool_stream_reassembles_to_the_non_streaming_response():
    stream, chunks = run(PARALLEL_TOOLS)
    response = from_anthropic(anthropic_message([
        {"type": "text", "text": "Both."},
        {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {"tz": "CET"}}],
        "tool_use", {"input_tokens": 10, "output_tokens": 40}), MODEL, ID, CREATED)
    message = response["choices"][0]["message"]
    assert assemble(chunks) == {"content": message["content"], "tool_calls": message["tool_calls"],
                                "finish_reason": "tool_calls"}
    assert stream.usage == response["usage"]


def test_tool_without_arguments_streams_empty_object():
    _, chunks = run([message_start(), tool_start(0, "toolu_N", "now"), json_delta(0, ""), block_stop(0),
                     *message_end("tool_use", 12)])
    assert chunks == [
        c({"role": "assistant", "content": None}),
        c({"tool_calls": [{"index": 0, "id": "toolu_N", "type": "function",
                           "function": {"name": "now", "arguments": ""}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        c({}, "tool_calls"),
    ]


def test_tool_without_any_delta_streams_empty_object():
    _, chunks = run([message_start(), tool_start(0, "toolu_N", "now"), block_stop(0)])
    assert chunks[-1] == c({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})


def test_message_start_alone_yields_no_chunk():
    # The role chunk waits for the first block: only then is it known whether text or a tool call comes.
    assert AnthropicStream(MODEL, ID, CREATED).feed(*message_start()) == []


def test_role_chunk_before_a_tool_call_has_null_content():
    stream = AnthropicStream(MODEL, ID, CREATED)
    stream.feed(*message_start())
    assert stream.feed(*tool_start(0, "toolu_W", "get_weather")) == [
        c({"role": "assistant", "content": None}),
        c({"tool_calls": [{"index": 0, "id": "toolu_W", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]})]


def test_role_chunk_before_text_has_empty_content():
    stream = AnthropicStream(MODEL, ID, CREATED)
    stream.feed(*message_start())
    assert stream.feed(*text_start(0)) == [c({"role": "assistant", "content": ""})]


def test_role_chunk_before_the_json_tool_has_empty_content():
    stream = AnthropicStream(MODEL, ID, CREATED)
    stream.feed(*message_start())
    assert stream.feed(*tool_start(0, "toolu_J", "json_tool_call")) == [c({"role": "assistant", "content": ""})]


def test_role_chunk_is_sent_once():
    stream = AnthropicStream(MODEL, ID, CREATED)
    stream.feed(*message_start())
    stream.feed(*text_start(0))
    assert stream.feed(*tool_start(1, "toolu_W", "get_weather")) == [
        c({"tool_calls": [{"index": 0, "id": "toolu_W", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]})]


def test_a_stream_without_blocks_still_opens_with_the_role_chunk():
    _, chunks = run([message_start(), *message_end("refusal", 0)])
    assert chunks == [c({"role": "assistant", "content": ""}), c({}, "content_filter")]


def test_ping_yields_nothing():
    stream = AnthropicStream(MODEL, ID, CREATED)
    assert stream.feed("ping", {"type": "ping"}) == []


def test_unknown_event_yields_nothing():
    stream = AnthropicStream(MODEL, ID, CREATED)
    assert stream.feed("future_event", {"type": "future_event", "x": 1}) == []


def test_empty_event_name_uses_data_type():
    stream = AnthropicStream(MODEL, ID, CREATED)
    stream.feed(*message_start())
    assert stream.feed("", {"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": "Hi"}}) == [c({"content": "Hi"})]


def test_thinking_blocks_and_deltas_yield_nothing():
    _, chunks = run([
        message_start(),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "EqQB"}}),
        block_stop(0),
        text_start(1), text_delta(1, "42"), block_stop(1),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "citations_delta", "citation": {"type": "char_location"}}}),
        *message_end("end_turn", 30),
    ])
    assert chunks == [c({"role": "assistant", "content": ""}), c({"content": "42"}), c({}, "stop")]


def test_json_mode_stream_emits_content_and_stop():
    stream, chunks = run([message_start(), tool_start(0, "toolu_J", "json_tool_call"),
                          json_delta(0, ""), json_delta(0, "{\"name\": "), json_delta(0, "\"Ada\"}"), block_stop(0),
                          *message_end("tool_use", 9)])
    assert chunks == [
        c({"role": "assistant", "content": ""}),
        c({"content": "{\"name\": "}),
        c({"content": "\"Ada\"}"}),
        c({}, "stop"),
    ]
    assert stream.finish_reason == "stop"


def test_json_mode_stream_reassembles_to_the_non_streaming_response():
    _, chunks = run([message_start(), tool_start(0, "toolu_J", "json_tool_call"),
                     json_delta(0, "{\"name\": \"Ada\"}"), block_stop(0), *message_end("tool_use", 9)])
    response = from_anthropic(anthropic_message([{"type": "tool_use", "id": "toolu_J", "name": "json_tool_call",
                                                  "input": {"name": "Ada"}}], "tool_use"), MODEL, ID, CREATED)
    assert assemble(chunks) == {"content": response["choices"][0]["message"]["content"], "tool_calls": None,
                                "finish_reason": response["choices"][0]["finish_reason"]}


def test_error_event_overloaded_raises_503():
    stream = AnthropicStream(MODEL, ID, CREATED)
    stream.feed(*message_start())
    with pytest.raises(UpstreamError) as raised:
        stream.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert raised.value.status == 503
    assert raised.value.error == {"message": "Overloaded", "type": "service_unavailable_error",
                                  "param": None, "code": "overloaded"}
    assert raised.value.upstream_status is None


@pytest.mark.parametrize("kind, status", [
    ("api_error", 500), ("rate_limit_error", 429), ("invalid_request_error", 400), ("some_new_error", 500)])
def test_error_event_status_follows_the_error_type(kind, status):
    with pytest.raises(UpstreamError) as raised:
        AnthropicStream(MODEL, ID, CREATED).feed("", {"type": "error", "error": {"type": kind, "message": "x"}})
    assert raised.value.status == status


def test_usage_is_cumulative_not_added_to_the_message_start_placeholder():
    stream, _ = run([message_start(input_tokens=20, output_tokens=1), text_start(0), text_delta(0, "a"),
                     ("message_delta", {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 5}}),
                     *message_end("end_turn", 9)])
    assert stream.usage == usage_of(20, 9)


def test_message_delta_usage_may_update_input_and_cache_counters():
    stream, _ = run([message_start(input_tokens=0, output_tokens=1),
                     ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                        "usage": {"input_tokens": 30, "cache_read_input_tokens": 100,
                                                  "cache_creation_input_tokens": None, "output_tokens": 7}}),
                     ("message_stop", {"type": "message_stop"})])
    assert stream.usage == usage_of(130, 7, cached=100)


def test_stream_usage_with_cache_counters():
    stream, _ = run([message_start(input_tokens=50, output_tokens=1, cache_creation_input_tokens=1000,
                                   cache_read_input_tokens=3000), *message_end("end_turn", 20)])
    assert stream.usage == usage_of(4050, 20, cached=3000, written=1000)


@pytest.mark.parametrize("stop_reason, finish_reason", [
    ("max_tokens", "length"), ("refusal", "content_filter"), ("stop_sequence", "stop"), (None, "stop")])
def test_stream_finish_reason_is_mapped(stop_reason, finish_reason):
    stream, chunks = run([message_start(), *message_end(stop_reason, 3)])
    assert (chunks[-1], stream.finish_reason) == (c({}, finish_reason), finish_reason)


def test_unfinished_stream_has_no_finish_reason():
    stream, _ = run([message_start(), text_start(0), text_delta(0, "Hel")])
    assert (stream.finish_reason, stream.done, stream.usage) == (None, False, usage_of(10, 1))


def test_usage_is_none_before_message_start():
    assert AnthropicStream(MODEL, ID, CREATED).usage is None


def test_usage_chunk():
    stream, _ = run(parse_sse(BASIC_RESPONSE))
    usage_chunk = check_chunk(stream.usage_chunk())
    assert usage_chunk == {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                           "choices": [], "usage": usage_of(11, 6)}


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("status, body, gateway_status, type_, code", [
    (400, {"type": "error", "error": {"type": "invalid_request_error",
                                      "message": "messages: text content blocks must be non-empty"},
           "request_id": "req_011Ca7Y6qP8U6SdepmtBMTy5"}, 400, "invalid_request_error", None),
    (401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"},
           "request_id": "req_011CYhr1kdGzCrPHfrhibMen"}, 401, "authentication_error", "invalid_api_key"),
    (402, {"type": "error", "error": {"type": "billing_error", "message": "Your credit balance is too low."}},
     402, "insufficient_quota", "insufficient_quota"),
    (403, {"type": "error", "error": {"type": "permission_error", "message": "Forbidden"}},
     403, "permission_error", None),
    (404, {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-3-5-sonnet-20241022 "}},
     404, "invalid_request_error", "model_not_found"),
    (413, {"type": "error", "error": {"type": "request_too_large", "message": "Request exceeds the maximum size"}},
     413, "invalid_request_error", "request_too_large"),
    (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "This request would exceed the rate limit "
                                      "for your organization of 40,000 input tokens per minute."}},
     429, "rate_limit_error", "rate_limit_exceeded"),
    (500, {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
     500, "server_error", None),
    (504, {"type": "error", "error": {"type": "timeout_error", "message": "Request timed out"}},
     504, "timeout_error", "timeout"),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     503, "service_unavailable_error", "overloaded"),
])
def test_error_status_table(status, body, gateway_status, type_, code):
    error = error_from_anthropic(status, body, json.dumps(body))
    assert isinstance(error, UpstreamError)
    assert (error.status, error.upstream_status) == (gateway_status, status)
    assert error.error == {"message": body["error"]["message"], "type": type_, "param": None, "code": code}


def test_prompt_too_long_is_context_length_exceeded():
    body = {"type": "error", "error": {"type": "invalid_request_error",
                                       "message": "prompt is too long: 208310 tokens > 200000 maximum"}}
    error = error_from_anthropic(400, body, json.dumps(body))
    assert error.status == 400
    assert error.error == {"message": "prompt is too long: 208310 tokens > 200000 maximum",
                           "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}


def test_input_and_max_tokens_over_context_limit_is_context_length_exceeded():
    message = ("input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, "
               "decrease input length or `max_tokens` and try again")
    error = error_from_anthropic(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}, "")
    assert error.error["code"] == "context_length_exceeded"


def test_non_json_error_body_gets_a_generic_message_with_the_status():
    error = error_from_anthropic(502, None, "<html>Bad Gateway</html>")
    assert error.status == 502
    assert error.error == {"message": "Anthropic API returned HTTP 502: <html>Bad Gateway</html>",
                           "type": "server_error", "param": None, "code": None}


def test_empty_non_json_529_maps_to_503_overloaded():
    error = error_from_anthropic(529, None, "")
    assert (error.status, error.upstream_status) == (503, 529)
    assert error.error == {"message": "Anthropic API returned HTTP 529.", "type": "service_unavailable_error",
                           "param": None, "code": "overloaded"}


def test_json_body_without_anthropic_error_shape_is_treated_as_text():
    error = error_from_anthropic(429, {"message": "slow down"}, "{\"message\": \"slow down\"}")
    assert error.status == 429
    assert error.error == {"message": "Anthropic API returned HTTP 429: {\"message\": \"slow down\"}",
                           "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}


def test_unknown_error_type_falls_back_on_the_status():
    body = {"type": "error", "error": {"type": "brand_new_error", "message": "Nope"}}
    assert error_from_anthropic(418, body, "").error == {"message": "Nope", "type": "invalid_request_error",
                                                         "param": None, "code": None}


def test_retry_after_is_kept():
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}}
    assert error_from_anthropic(429, body, "", retry_after=12).retry_after == 12


def test_a_stream_closed_after_message_delta_is_finished_as_message_stop_would():
    s = AnthropicStream(MODEL, ID, CREATED)
    for event in [message_start(), text_start(0), text_delta(0, "Hi"), block_stop(0), message_end("end_turn", 3)[0]]:
        s.feed(*event)
    assert s.finish() == [c({}, "stop")]
    assert s.finish_reason == "stop" and s.done and s.usage["completion_tokens"] == 3


def test_a_stream_cut_before_message_delta_is_not_finished():
    s = AnthropicStream(MODEL, ID, CREATED)
    for event in [message_start(), text_start(0), text_delta(0, "Hi")]:
        s.feed(*event)
    assert s.finish() == []
    assert s.finish_reason is None and not s.done
