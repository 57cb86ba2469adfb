"""OpenAI ⇄ Gemini translation: literal inputs and outputs, mostly from the wire-format reference (C, D)."""
import copy
import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.translate.common import UpstreamError
from gateway.translate.gemini import (FINISH_REASON_MAP, GeminiStream, error_from_gemini, from_gemini,
                                      split_tool_call_id, to_gemini, tool_call_id_with_signature)
from gateway.translate.schema import clean_schema

MODEL, ID, CREATED = "gemini-2.5-flash", "chatcmpl-test", 1741569952

# Signature "CikBcsjafFK1...=" (reference C.3, shortened there) carried in a tool-call id.
SIG = "CikBcsjafFK1...="
SIG_ID = "call_abc123__thought__Q2lrQmNzamFmRksxLi4uPQ"

# reference C.3, verbatim louter streaming_function_calling/response_0.json
RESPONSE_0 = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}, "thoughtSignature": "CikBcsjafFK1...="}], "role": "model"}, "finishReason": "STOP", "index": 0, "finishMessage": "Model generated function call(s)."}], "usageMetadata": {"promptTokenCount": 83, "candidatesTokenCount": 14, "totalTokenCount": 201, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 83}], "thoughtsTokenCount": 104}, "modelVersion": "gemini-2.5-flash", "responseId": "qpc2afWVFJK4vr0Pq6WiyAU"}  # noqa: E501

# reference C.3, illustrative text reply
TEXT_RESPONSE = {
    "candidates": [{
        "content": {"parts": [{"text": "The capital of France is Paris."}], "role": "model"},
        "finishReason": "STOP",
        "index": 0,
    }],
    "usageMetadata": {
        "promptTokenCount": 8, "candidatesTokenCount": 7, "totalTokenCount": 45,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
        "thoughtsTokenCount": 30,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "IZI2acSKMoWl0-kPmYj2yQc",
}

# reference C.4, verbatim louter streaming_long/response.json, first and last events
STREAM_FIRST = {"candidates": [{"content": {"parts": [{"text": "Okay, let's create a Tetris game in Python for the console! ..."}], "role": "model"}, "index": 0}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 49, "totalTokenCount": 2095, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}], "thoughtsTokenCount": 2042}, "modelVersion": "gemini-2.5-flash", "responseId": "IZI2acSKMoWl0-kPmYj2yQc"}  # noqa: E501
STREAM_LAST = {"candidates": [{"content": {"parts": [{"text": ", hold functionality, sound, high scores, etc."}], "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 5947, "totalTokenCount": 7993, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}], "thoughtsTokenCount": 2042}, "modelVersion": "gemini-2.5-flash", "responseId": "IZI2acSKMoWl0-kPmYj2yQc"}  # noqa: E501

# reference C.5, verbatim error bodies
ERR_KEY = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}, {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key."}]}}  # noqa: E501
ERR_403 = {"error": {"code": 403, "message": "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", "status": "PERMISSION_DENIED"}}  # noqa: E501
ERR_404 = {"error": {"code": 404, "message": "models/gemini-2.0-pro is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.", "status": "NOT_FOUND"}}  # noqa: E501
ERR_429 = {"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"}}]}, {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "59s"}]}}  # noqa: E501

WEATHER_CALL = {"id": "call_1", "type": "function",
                "function": {"name": "getWeather", "arguments": "{\"location\":\"Tokyo\"}"}}


def req(*messages, **fields):
    return {"model": MODEL, "messages": list(messages), **fields}


def user(text):
    return {"role": "user", "content": text}


def candidate(parts, finish="STOP", index=0):
    c = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish:
        c["finishReason"] = finish
    return c


def response(*candidates, usage=None):
    body = {"candidates": list(candidates), "modelVersion": MODEL}
    if usage:
        body["usageMetadata"] = usage
    return body


def valid_completion(body):
    ChatCompletion.model_validate(body)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert (body["id"], body["object"], body["created"], body["model"]) == (ID, "chat.completion", CREATED, MODEL)
    for choice in body["choices"]:
        assert set(choice) == {"index", "message", "logprobs", "finish_reason"}
        assert choice["logprobs"] is None
        assert {"role", "content", "refusal"} <= set(choice["message"]) <= {"role", "content", "refusal",
                                                                             "tool_calls"}
    return body


def valid_chunks(chunks):
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert (c["id"], c["object"], c["created"], c["model"]) == (ID, "chat.completion.chunk", CREATED, MODEL)
        if c["choices"]:
            assert set(c) == {"id", "object", "created", "model", "choices"}
            assert len(c["choices"]) == 1
            assert set(c["choices"][0]) == {"index", "delta", "logprobs", "finish_reason"}
        else:
            assert set(c) == {"id", "object", "created", "model", "choices", "usage"}
    return chunks


def run(*events):
    stream = GeminiStream(MODEL, ID, CREATED)
    chunks = [c for e in events for c in stream.feed(copy.deepcopy(e))] + stream.finish()
    return stream, valid_chunks(chunks)


def deltas(chunks):
    return [(c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
            for c in chunks]


def accumulate(chunks):
    """What an OpenAI client builds from the chunks, per choice index."""
    choices = {}
    for c in chunks:
        for ch in c["choices"]:
            acc = choices.setdefault(ch["index"], {"content": None, "tool_calls": {}, "finish_reason": None})
            delta = ch["delta"]
            if delta.get("content") is not None:
                acc["content"] = (acc["content"] or "") + delta["content"]
            for tc in delta.get("tool_calls") or []:
                slot = acc["tool_calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                slot["name"] += tc.get("function", {}).get("name") or ""
                slot["arguments"] += tc.get("function", {}).get("arguments") or ""
            acc["finish_reason"] = ch["finish_reason"] or acc["finish_reason"]
    return choices


def summary(message):
    return [(tc["function"]["name"], json.loads(tc["function"]["arguments"]), split_tool_call_id(tc["id"])[1])
            for tc in message.get("tool_calls") or []]


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------

def test_request_reference_c2_example():
    request = req(
        {"role": "system", "content": "You are concise."},
        {"role": "user", "content": [
            {"type": "text", "text": "Describe the image and get Tokyo weather."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo...", "detail": "auto"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": SIG_ID, "type": "function",
             "function": {"name": "getWeather", "arguments": "{\"location\":\"Tokyo\"}"}}]},
        {"role": "tool", "tool_call_id": SIG_ID, "content": "{\"temperature\": 22, \"condition\": \"Cloudy\"}"},
        tools=[{"type": "function", "function": {
            "name": "getWeather", "description": "Get current weather for a city", "strict": True,
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"], "additionalProperties": False}}}],
        tool_choice="auto",
        temperature=0.7, top_p=0.95, max_completion_tokens=1024, stop=["END"], n=1,
        stream=True, stream_options={"include_usage": True}, user="user-1", parallel_tool_calls=True,
    )
    # C.2 minus topK, thinkingConfig and safetySettings, which OpenAI requests cannot express, and minus its
    # responseMimeType and responseSchema, which Gemini 2.x refuses beside functionDeclarations (see
    # test_request_json_mode_beside_tools_is_asked_for_in_the_instructions).
    assert to_gemini(request) == {
        "systemInstruction": {"parts": [{"text": "You are concise."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Describe the image and get Tokyo weather."},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo..."}}
            ]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}},
                 "thoughtSignature": "CikBcsjafFK1...="}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "getWeather", "response": {"temperature": 22, "condition": "Cloudy"}}}
            ]}
        ],
        "tools": [{"functionDeclarations": [{
            "name": "getWeather",
            "description": "Get current weather for a city",
            "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}, "required": ["location"]}
        }]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {
            "temperature": 0.7, "topP": 0.95,
            "maxOutputTokens": 1024, "stopSequences": ["END"], "candidateCount": 1,
        },
    }


def test_request_plain_user_message():
    assert to_gemini(req(user("Hi"))) == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_request_all_system_and_developer_messages_go_to_system_instruction():
    body = to_gemini(req({"role": "system", "content": "A"}, user("Hi"),
                         {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                         {"role": "assistant", "content": "Hello"}, {"role": "system", "content": "C"}))
    assert body == {"systemInstruction": {"parts": [{"text": "A"}, {"text": "B"}, {"text": "C"}]},
                    "contents": [{"role": "user", "parts": [{"text": "Hi"}]},
                                 {"role": "model", "parts": [{"text": "Hello"}]}]}


def test_request_consecutive_user_turns_are_merged():
    assert to_gemini(req(user("a"), user("b")))["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]


def test_request_consecutive_assistant_turns_are_merged():
    body = to_gemini(req(user("a"), {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a"}]},
                                {"role": "model", "parts": [{"text": "b"}, {"text": "c"}]}]


def test_request_assistant_list_content_becomes_text():
    body = to_gemini(req(user("a"), {"role": "assistant", "content": [{"type": "text", "text": "x"},
                                                                      {"type": "text", "text": "y"}]}))
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "xy"}]}


def test_request_empty_messages_are_left_out():
    # Gemini rejects turns without parts and empty text parts.
    body = to_gemini(req(user("a"), {"role": "assistant", "content": ""}, user("")))
    assert body["contents"] == [{"role": "user", "parts": [{"text": "a"}]}]


def test_request_system_message_alone_is_sent_as_the_user_turn():
    assert to_gemini(req({"role": "system", "content": "Say hi"})) == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}


def test_request_system_message_with_an_empty_user_message_is_sent_as_the_user_turn():
    assert to_gemini(req({"role": "system", "content": "Say hi"}, user(""))) == {
        "contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}


def test_request_empty_user_message_alone_is_400():
    with pytest.raises(UpstreamError) as e:
        to_gemini(req(user("")))
    assert (e.value.status, e.value.error["param"]) == (400, "messages")


def test_request_assistant_text_and_tool_call():
    body = to_gemini(req(user("w?"), {"role": "assistant", "content": "Checking.", "tool_calls": [WEATHER_CALL]}))
    assert body["contents"][1] == {"role": "model", "parts": [
        {"text": "Checking."}, {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}}]}


def test_request_empty_arguments_become_empty_args():
    call = {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}
    body = to_gemini(req(user("t?"), {"role": "assistant", "content": None, "tool_calls": [call]}))
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "now", "args": {}}}]


def test_request_invalid_arguments_json_is_400():
    call = {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{oops"}}
    with pytest.raises(UpstreamError) as e:
        to_gemini(req(user("t?"), {"role": "assistant", "content": None, "tool_calls": [call]}))
    assert e.value.status == 400
    assert e.value.error["type"] == "invalid_request_error"
    assert e.value.error["param"] == "messages[1].tool_calls[0].function.arguments"
    assert "not valid JSON" in e.value.error["message"]


def test_request_non_object_arguments_is_400():
    call = {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "[1]"}}
    with pytest.raises(UpstreamError) as e:
        to_gemini(req(user("t?"), {"role": "assistant", "content": None, "tool_calls": [call]}))
    assert (e.value.status, e.value.error["param"]) == (400, "messages[1].tool_calls[0].function.arguments")


def test_request_several_tool_messages_become_one_user_turn():
    calls = [WEATHER_CALL, {"id": "call_2", "type": "function",
                            "function": {"name": "getTime", "arguments": "{\"tz\":\"JST\"}"}}]
    body = to_gemini(req(user("w?"), {"role": "assistant", "content": None, "tool_calls": calls},
                         {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 22}"},
                         {"role": "tool", "tool_call_id": "call_2", "content": "{\"time\": \"12:00\"}"}))
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "w?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}},
                                    {"functionCall": {"name": "getTime", "args": {"tz": "JST"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "getWeather", "response": {"temp": 22}}},
                                   {"functionResponse": {"name": "getTime", "response": {"time": "12:00"}}}]},
    ]


def test_request_user_message_after_tool_results_joins_their_turn():
    body = to_gemini(req(user("w?"), {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 22}"}, user("thanks")))
    assert body["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "getWeather", "response": {"temp": 22}}}, {"text": "thanks"}]}


@pytest.mark.parametrize("content, response", [
    ("22 degrees", {"content": "22 degrees"}),
    ("[1, 2]", {"content": "[1, 2]"}),
    ("42", {"content": "42"}),
    ("", {"content": ""}),
    ([{"type": "text", "text": "{\"a\":"}, {"type": "text", "text": " 1}"}], {"a": 1}),
])
def test_request_tool_result_that_is_not_a_json_object_is_wrapped(content, response):
    body = to_gemini(req(user("w?"), {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
                         {"role": "tool", "tool_call_id": "call_1", "content": content}))
    assert body["contents"][2]["parts"] == [{"functionResponse": {"name": "getWeather", "response": response}}]


def test_request_unknown_tool_call_id_is_400():
    with pytest.raises(UpstreamError) as e:
        to_gemini(req(user("w?"), {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
                      {"role": "tool", "tool_call_id": "call_nope", "content": "x"}))
    assert e.value.status == 400
    assert e.value.error["param"] == "messages[2].tool_call_id"
    assert "call_nope" in e.value.error["message"]


def test_request_unsupported_role_is_400():
    with pytest.raises(UpstreamError) as e:
        to_gemini(req(user("a"), {"role": "function", "name": "f", "content": "x"}))
    assert (e.value.status, e.value.error["param"]) == (400, "messages[1].role")


@pytest.mark.parametrize("url, file_data", [
    ("https://example.com/cat.png", {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}),
    ("https://example.com/a/cat.JPG?x=1.gif", {"mimeType": "image/jpeg",
                                               "fileUri": "https://example.com/a/cat.JPG?x=1.gif"}),
    ("http://example.com/cat.webp", {"mimeType": "image/webp", "fileUri": "http://example.com/cat.webp"}),
    ("https://example.com/image", {"mimeType": "image/jpeg", "fileUri": "https://example.com/image"}),
])
def test_request_image_url_becomes_file_data(url, file_data):
    body = to_gemini(req({"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}))
    assert body["contents"][0]["parts"] == [{"fileData": file_data}]


def test_request_image_data_url_becomes_inline_data():
    part = {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}}
    body = to_gemini(req({"role": "user", "content": [part]}))
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}}]


def test_request_image_data_url_goes_with_the_type_its_bytes_are():
    part = {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,iVBORw0KGgoAAAANSUhEUg=="}}
    body = to_gemini(req({"role": "user", "content": [part]}))
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "image/png",
                                                            "data": "iVBORw0KGgoAAAANSUhEUg=="}}]


def test_request_non_base64_data_url_is_400():
    part = {"type": "image_url", "image_url": {"url": "data:text/plain,hello"}}
    with pytest.raises(UpstreamError) as e:
        to_gemini(req({"role": "user", "content": [part]}))
    assert (e.value.status, e.value.error["param"]) == (400, "messages[0].content[0].image_url.url")


def test_request_input_audio_becomes_inline_data():
    part = {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}
    body = to_gemini(req({"role": "user", "content": [part]}))
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "audio/wav", "data": "UklGR"}}]


def test_request_file_data_url_becomes_inline_data():
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
    body = to_gemini(req({"role": "user", "content": [part]}))
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]


def test_request_file_id_is_400():
    part = {"type": "file", "file": {"file_id": "file-abc"}}
    with pytest.raises(UpstreamError) as e:
        to_gemini(req({"role": "user", "content": [part]}))
    assert (e.value.status, e.value.error["param"]) == (400, "messages[0].content[0]")


@pytest.mark.parametrize("fields, config", [
    ({"temperature": 0.2}, {"temperature": 0.2}),
    ({"temperature": 0}, {"temperature": 0}),
    ({"top_p": 0.5}, {"topP": 0.5}),
    ({"max_tokens": 100}, {"maxOutputTokens": 100}),
    ({"max_completion_tokens": 200}, {"maxOutputTokens": 200}),
    ({"max_completion_tokens": 200, "max_tokens": 100}, {"maxOutputTokens": 200}),
    ({"stop": "END"}, {"stopSequences": ["END"]}),
    ({"stop": ["a", "b"]}, {"stopSequences": ["a", "b"]}),
    ({"n": 2}, {"candidateCount": 2}),
    ({"seed": 7}, {"seed": 7}),
    ({"presence_penalty": 0.5}, None),
    ({"frequency_penalty": -0.5}, None),
    ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
    ({"response_format": {"type": "text"}}, None),
    ({"temperature": None, "max_tokens": None, "stop": None}, None),
])
def test_request_generation_config_table(fields, config):
    body = to_gemini(req(user("Hi"), **fields))
    assert body.get("generationConfig") == config


@pytest.mark.parametrize("fields, config", [
    ({"presence_penalty": 0.5}, {"presencePenalty": 0.5}),
    ({"frequency_penalty": -0.5, "temperature": 1}, {"frequencyPenalty": -0.5, "temperature": 1}),
])
def test_request_penalties_go_to_a_model_that_takes_them(fields, config):
    body = to_gemini(req(user("Hi"), **fields), capabilities=frozenset({"tools", "penalties"}))
    assert body["generationConfig"] == config


SEARCH_TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]


def test_request_json_mode_beside_tools_is_asked_for_in_the_instructions():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    body = to_gemini(req({"role": "system", "content": "Be brief."}, user("Hi"), tools=SEARCH_TOOLS, temperature=0,
                         response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}))
    assert body["generationConfig"] == {"temperature": 0}  # no responseMimeType beside functionDeclarations
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "search"
    first, extra = body["systemInstruction"]["parts"]
    assert first == {"text": "Be brief."}
    assert extra["text"].startswith("When you answer rather than call a function, answer with one JSON value")
    assert json.loads(extra["text"].split("JSON Schema: ", 1)[1]) == schema


def test_request_json_object_beside_tools_is_asked_for_in_the_instructions():
    body = to_gemini(req(user("Hi"), tools=SEARCH_TOOLS, response_format={"type": "json_object"}))
    assert "generationConfig" not in body
    assert body["systemInstruction"] == {"parts": [
        {"text": "When you answer rather than call a function, answer with one JSON object only, no other text."}]}


def test_request_json_mode_without_tools_stays_in_the_generation_config():
    body = to_gemini(req(user("Hi"), tools=[], response_format={"type": "json_object"}))
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                    "generationConfig": {"responseMimeType": "application/json"}}


def test_request_default_max_tokens_used_when_client_gives_none():
    assert to_gemini(req(user("Hi")), default_max_tokens=4096)["generationConfig"] == {"maxOutputTokens": 4096}


def test_request_client_max_tokens_beats_default():
    body = to_gemini(req(user("Hi"), max_tokens=10), default_max_tokens=4096)
    assert body["generationConfig"] == {"maxOutputTokens": 10}


def test_request_fields_without_gemini_equivalent_are_dropped():
    body = to_gemini(req(user("Hi"), user="u-1", logprobs=True, top_logprobs=2, logit_bias={"50256": -100},
                         stream=True, stream_options={"include_usage": True}, parallel_tool_calls=False,
                         metadata={"a": "b"}, store=False))
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_request_json_schema_response_format_is_cleaned():
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "Answer", "type": "object",
              "properties": {"answer": {"type": "string"}, "score": {"type": ["number", "null"]}},
              "required": ["answer", "score"], "additionalProperties": False}
    body = to_gemini(req(user("Hi"), response_format={"type": "json_schema", "json_schema": {
        "name": "a", "strict": True, "schema": schema}}))
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "title": "Answer", "type": "OBJECT",
        "properties": {"answer": {"type": "STRING"}, "score": {"nullable": True, "type": "NUMBER"}},
        "required": ["answer", "score"]}}


def test_request_json_schema_without_properties_is_plain_json_mode():
    body = to_gemini(req(user("Hi"), response_format={"type": "json_schema", "json_schema": {
        "name": "a", "schema": {"type": "object", "additionalProperties": True}}}))
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_request_tools_become_function_declarations():
    body = to_gemini(req(user("Hi"), tools=[
        {"type": "function", "function": {"name": "getWeather", "description": "Weather",
                                          "parameters": {"type": "object",
                                                         "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "noArgs", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "noSchema"}},
    ]))
    # Gemini rejects an OBJECT with empty properties, so an argument-less tool has no `parameters`.
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "getWeather", "description": "Weather",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}},
        {"name": "noArgs"},
        {"name": "noSchema"},
    ]}]


def test_request_tool_without_a_type_is_a_function_as_for_claude():
    # Claude models used such a tool; Gemini models were sent no tools and answered in text instead.
    body = to_gemini(req(user("Hi"), tools=[{"function": {"name": "noType"}}]))
    assert body["tools"] == [{"functionDeclarations": [{"name": "noType"}]}]


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                         "properties": {"x": {"type": "integer"}}}}}]


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}),
    ("required", {"mode": "ANY"}),
    ("none", {"mode": "NONE"}),
    ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_request_tool_choice_table(choice, config):
    body = to_gemini(req(user("Hi"), tools=TOOLS, tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_request_no_tool_choice_no_tool_config():
    assert "toolConfig" not in to_gemini(req(user("Hi"), tools=TOOLS))


def test_request_tool_choice_without_tools_is_dropped():
    assert to_gemini(req(user("Hi"), tool_choice="none")) == {"contents": [{"role": "user",
                                                                            "parts": [{"text": "Hi"}]}]}


# --- schema cleaning -------------------------------------------------------------------------------

def test_schema_drops_json_schema_only_keywords_at_every_depth():
    schema = {"type": "object", "$schema": "x", "$id": "y", "strict": True, "additionalProperties": False,
              "properties": {"tags": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                                 "properties": {"k": {"type": "string",
                                                                                      "const": "v"}}}}}}
    assert clean_schema(schema) == {"type": "OBJECT", "properties": {"tags": {"type": "ARRAY", "items": {
        "type": "OBJECT", "properties": {"k": {"type": "STRING", "enum": ["v"]}}}}}}


def test_schema_keeps_gemini_fields():
    schema = {"type": "string", "format": "date-time", "title": "T", "description": "D", "enum": ["a"],
              "minLength": 1, "maxLength": 9, "pattern": "^a$", "default": "a", "example": "a"}
    assert clean_schema(schema) == {**schema, "type": "STRING"}


@pytest.mark.parametrize("field, cleaned", [
    ({"type": "string", "format": "date"}, {"type": "STRING"}),           # pydantic: datetime.date
    ({"type": "string", "format": "uuid"}, {"type": "STRING"}),           # uuid.UUID
    ({"type": "string", "format": "uri", "minLength": 1}, {"type": "STRING", "minLength": 1}),  # HttpUrl
    ({"type": "string", "format": "email"}, {"type": "STRING"}),          # EmailStr
    ({"type": "string", "format": "date-time"}, {"type": "STRING", "format": "date-time"}),
    ({"type": "number", "format": "double"}, {"type": "NUMBER", "format": "double"}),
    ({"type": "integer", "format": "int64"}, {"type": "INTEGER", "format": "int64"}),
    ({"type": "integer", "format": "date-time"}, {"type": "INTEGER"}),
])
def test_schema_keeps_only_the_formats_gemini_accepts(field, cleaned):
    # Gemini: 400 "...properties[url].format: only 'enum' and 'date-time' are supported for STRING type"
    # (google-gemini/gemini-cli#3178), so `parse` with a date, UUID or URL field failed on Gemini models.
    assert clean_schema({"type": "object", "properties": {"f": field}})["properties"]["f"] == cleaned


@pytest.mark.parametrize("field, cleaned", [
    ({"type": "integer", "enum": [1, 2]}, {"type": "INTEGER"}),            # IntEnum, Literal[1, 2]
    ({"enum": ["a", "b"]}, {"enum": ["a", "b"], "type": "STRING"}),
    ({"const": "x", "type": "string"}, {"enum": ["x"], "type": "STRING"}),  # Literal["x"]
    ({"enum": ["a", None]}, {"enum": ["a"], "nullable": True, "type": "STRING"}),
    ({"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "null"}]}, {"nullable": True, "type": "STRING",
                                                                         "enum": ["a"]}),
])
def test_schema_enums_are_strings_as_gemini_requires(field, cleaned):
    # Gemini: 400 "Invalid value at '...enum[0]' (TYPE_STRING), 1" (microsoft/azure-devops-mcp#145).
    assert clean_schema({"type": "object", "properties": {"f": field}})["properties"]["f"] == cleaned


def test_schema_property_named_like_a_keyword_is_kept():
    schema = {"type": "object", "properties": {"additionalProperties": {"type": "boolean"},
                                               "type": {"type": "string"}}}
    assert clean_schema(schema) == {"type": "OBJECT", "properties": {"additionalProperties": {"type": "BOOLEAN"},
                                                                     "type": {"type": "STRING"}}}


def test_schema_type_list_with_null_becomes_nullable():
    assert clean_schema({"type": ["null", "integer"]}) == {"nullable": True, "type": "INTEGER"}


def test_schema_optional_any_of_becomes_nullable():
    schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "Maybe", "default": None}
    assert clean_schema(schema) == {"nullable": True, "type": "STRING", "description": "Maybe", "default": None}


def test_schema_real_any_of_is_kept():
    schema = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    assert clean_schema(schema) == {"nullable": True, "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}


def test_schema_refs_are_inlined():
    schema = {"type": "object", "$defs": {"City": {"type": "object", "title": "City",
                                                   "properties": {"name": {"type": "string"}}}},
              "properties": {"home": {"$ref": "#/$defs/City", "description": "Home town"},
                             "trips": {"type": "array", "items": {"$ref": "#/definitions/City"}}}}
    city = {"type": "OBJECT", "title": "City", "properties": {"name": {"type": "STRING"}}}
    assert clean_schema(schema) == {"type": "OBJECT", "properties": {
        "home": {**city, "description": "Home town"}, "trips": {"type": "ARRAY", "items": city}}}


def test_schema_recursive_ref_is_400():
    schema = {"type": "object", "$defs": {"Node": {"type": "object", "properties": {
        "child": {"$ref": "#/$defs/Node"}}}}, "properties": {"root": {"$ref": "#/$defs/Node"}}}
    with pytest.raises(UpstreamError) as e:
        clean_schema(schema)
    assert e.value.status == 400
    assert "recursive" in e.value.error["message"]


def test_schema_nested_empty_properties_removed():
    schema = {"type": "object", "properties": {"meta": {"type": "object", "properties": {}}}}
    assert clean_schema(schema) == {"type": "OBJECT", "properties": {"meta": {"type": "OBJECT"}}}


@pytest.mark.parametrize("schema, cleaned", [
    # An object written without "type" (JSON Schema allows it; MCP tools do it): Gemini answers 400
    # "...properties: only allowed for OBJECT type" unless it says OBJECT.
    ({"properties": {"id": {"type": "string"}}, "required": ["id"]},
     {"type": "OBJECT", "properties": {"id": {"type": "STRING"}}, "required": ["id"]}),
    ({"required": ["id"]}, {"type": "OBJECT"}),   # Gemini: "required[0]: property is not defined"
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
     {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]}),
    ({"type": ["array", "string"]}, {"anyOf": [{"type": "ARRAY", "items": {"type": "STRING"}}, {"type": "STRING"}]}),
    ({"type": "object", "properties": {"data": {"description": "d", "properties": {"x": {"type": "integer"}}}}},
     {"type": "OBJECT", "properties": {"data": {"type": "OBJECT", "description": "d",
                                                "properties": {"x": {"type": "INTEGER"}}}}}),
    # properties on another type are refused the same way: dropped
    ({"type": "string", "properties": {"x": {"type": "string"}}, "required": ["x"]}, {"type": "STRING"}),
    # an array without items: Gemini answers 400 "...items: missing field"
    ({"type": "array"}, {"type": "ARRAY", "items": {"type": "STRING"}}),
    ({"type": "array", "items": {"type": "array"}},
     {"type": "ARRAY", "items": {"type": "ARRAY", "items": {"type": "STRING"}}}),
    ({"type": ["array", "null"]}, {"type": "ARRAY", "nullable": True, "items": {"type": "STRING"}}),
    ({"type": "array", "items": {"type": "integer"}}, {"type": "ARRAY", "items": {"type": "INTEGER"}}),
    # a union keeps its branches as they are
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
])
def test_schema_shapes_gemini_refuses_are_made_acceptable(schema, cleaned):
    assert clean_schema(schema) == cleaned


def test_tool_parameters_without_a_type_are_declared_as_an_object():
    tools = [{"type": "function", "function": {"name": "get", "parameters": {
        "properties": {"tags": {"type": "array"}}}}}]
    (declaration,) = to_gemini(req(user("Hi"), tools=tools))["tools"][0]["functionDeclarations"]
    assert declaration == {"name": "get", "parameters": {
        "type": "OBJECT", "properties": {"tags": {"type": "ARRAY", "items": {"type": "STRING"}}}}}


# --- thought signatures ----------------------------------------------------------------------------

def test_signature_encoding_is_url_safe_and_reversible():
    call_id = tool_call_id_with_signature("call_abc123", SIG)
    assert call_id == SIG_ID
    assert split_tool_call_id(call_id) == ("call_abc123", SIG)


def test_signature_encoding_of_binary_looking_signature():
    signature = "+/+/AAA=="
    call_id = tool_call_id_with_signature("call_x", signature)
    assert set(call_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert split_tool_call_id(call_id) == ("call_x", signature)


@pytest.mark.parametrize("call_id", ["call_abc", "call_abc__thought__", "call_abc__thought__%%%", "toolu_01A"])
def test_split_tool_call_id_without_valid_signature(call_id):
    assert split_tool_call_id(call_id) == (call_id, None)


def test_thought_signature_round_trip():
    # Gemini answers with a signed call → OpenAI tool call → the client sends it back → signature restored.
    message = from_gemini(copy.deepcopy(RESPONSE_0), MODEL, ID, CREATED)["choices"][0]["message"]
    follow_up = req(user("Weather in Tokyo?"), {"role": "assistant", "content": None,
                                                "tool_calls": message["tool_calls"]},
                    {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "22C"})
    assert to_gemini(follow_up)["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}},
                                     "thoughtSignature": "CikBcsjafFK1...="}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "getWeather", "response": {"content": "22C"}}}]},
    ]


def test_tool_call_without_signature_sends_none():
    body = to_gemini(req(user("w?"), {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]}))
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}}]


# ---------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------

def test_response_text():
    assert valid_completion(from_gemini(copy.deepcopy(TEXT_RESPONSE), MODEL, ID, CREATED)) == {
        "id": ID, "object": "chat.completion", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "The capital of France is Paris.", "refusal": None}}],
        # completion = candidates 7 + thoughts 30; total = 45 = Gemini's totalTokenCount
        "usage": {"prompt_tokens": 8, "completion_tokens": 37, "total_tokens": 45,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 30}},
    }


def test_response_function_call_reference_response_0():
    body = valid_completion(from_gemini(copy.deepcopy(RESPONSE_0), MODEL, ID, CREATED))
    choice = body["choices"][0]
    call = choice["message"]["tool_calls"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None and choice["message"]["refusal"] is None
    assert set(call) == {"id", "type", "function"}
    assert call["type"] == "function"
    assert call["function"] == {"name": "getWeather", "arguments": "{\"location\": \"Tokyo\"}"}
    base, signature = split_tool_call_id(call["id"])
    assert base.startswith("call_") and signature == "CikBcsjafFK1...="
    assert body["usage"] == {"prompt_tokens": 83, "completion_tokens": 118, "total_tokens": 201,
                             "prompt_tokens_details": {"cached_tokens": 0},
                             "completion_tokens_details": {"reasoning_tokens": 104}}


def test_response_parallel_function_calls():
    body = valid_completion(from_gemini(response(candidate([
        {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}},
        {"functionCall": {"name": "getWeather", "args": {"location": "Paris"}}},
    ])), MODEL, ID, CREATED))
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "getWeather", "arguments": "{\"location\": \"Tokyo\"}"},
        {"name": "getWeather", "arguments": "{\"location\": \"Paris\"}"}]
    assert calls[0]["id"] != calls[1]["id"]
    assert all(c["id"].startswith("call_") for c in calls)
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_response_text_and_function_call():
    message = from_gemini(response(candidate([
        {"text": "Let me check."}, {"functionCall": {"name": "now", "args": {}}}])), MODEL, ID, CREATED)
    message = valid_completion(message)["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"][0]["function"] == {"name": "now", "arguments": "{}"}


def test_response_function_call_uses_gemini_id_when_given():
    body = from_gemini(response(candidate([{"functionCall": {"id": "fc-7", "name": "now"}}])), MODEL, ID, CREATED)
    assert valid_completion(body)["choices"][0]["message"]["tool_calls"][0]["id"] == "fc-7"


def test_response_arguments_keep_non_ascii():
    body = from_gemini(response(candidate([{"functionCall": {"name": "f", "args": {"city": "東京"}}}])),
                       MODEL, ID, CREATED)
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{\"city\": \"東京\"}"


def test_response_thought_parts_are_skipped():
    body = from_gemini(response(candidate([{"text": "Let me think...", "thought": True}, {"text": "Paris."}])),
                       MODEL, ID, CREATED)
    assert valid_completion(body)["choices"][0]["message"]["content"] == "Paris."


def test_response_text_parts_are_joined():
    body = from_gemini(response(candidate([{"text": "Par"}, {"text": "is."}])), MODEL, ID, CREATED)
    assert body["choices"][0]["message"]["content"] == "Paris."


@pytest.mark.parametrize("gemini, openai", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"), ("LANGUAGE", "content_filter"), ("OTHER", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "stop"), ("UNEXPECTED_TOOL_CALL", "stop"), ("TOO_MANY_TOOL_CALLS", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"), ("SOMETHING_NEW", "stop"), (None, "stop"),
])
def test_response_finish_reason(gemini, openai):
    body = from_gemini(response(candidate([{"text": "x"}], finish=gemini)), MODEL, ID, CREATED)
    assert valid_completion(body)["choices"][0]["finish_reason"] == openai


def test_finish_reason_map_is_data_with_openai_values_only():
    assert set(FINISH_REASON_MAP.values()) <= {"stop", "length", "content_filter"}
    assert FINISH_REASON_MAP["STOP"] == "stop" and FINISH_REASON_MAP["MAX_TOKENS"] == "length"


def test_response_max_tokens_with_function_call_stays_length():
    body = from_gemini(response(candidate([{"functionCall": {"name": "f", "args": {}}}], finish="MAX_TOKENS")),
                       MODEL, ID, CREATED)
    assert body["choices"][0]["finish_reason"] == "length"


def test_response_safety_without_content():
    body = from_gemini(response({"finishReason": "SAFETY", "index": 0,
                                 "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]}),
                       MODEL, ID, CREATED)
    assert valid_completion(body)["choices"][0] == {
        "index": 0, "logprobs": None, "finish_reason": "content_filter",
        "message": {"role": "assistant", "content": "", "refusal": None}}


def test_response_cached_tokens():
    body = from_gemini(response(candidate([{"text": "x"}]), usage={
        "promptTokenCount": 2000, "cachedContentTokenCount": 1500, "candidatesTokenCount": 3,
        "totalTokenCount": 2003}), MODEL, ID, CREATED)
    assert body["usage"] == {"prompt_tokens": 2000, "completion_tokens": 3, "total_tokens": 2003,
                             "prompt_tokens_details": {"cached_tokens": 1500},
                             "completion_tokens_details": {"reasoning_tokens": 0}}


def test_response_without_usage_metadata_reports_zero():
    body = from_gemini(response(candidate([{"text": "x"}])), MODEL, ID, CREATED)
    assert valid_completion(body)["usage"]["total_tokens"] == 0


def test_response_two_candidates():
    body = valid_completion(from_gemini(response(
        candidate([{"text": "Heads."}], index=0),
        candidate([{"functionCall": {"name": "flip", "args": {}}}], index=1)), MODEL, ID, CREATED))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "Heads.", "stop"), (1, None, "tool_calls")]


def test_response_blocked_prompt_is_400_content_filter():
    body = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": MODEL}
    with pytest.raises(UpstreamError) as e:
        from_gemini(body, MODEL, ID, CREATED)
    assert e.value.status == 400
    assert e.value.error == {"message": "Gemini blocked the prompt (blockReason SAFETY).",
                             "type": "invalid_request_error", "param": None, "code": "content_filter"}


def test_response_no_candidates_without_reason_is_502():
    with pytest.raises(UpstreamError) as e:
        from_gemini({"usageMetadata": {"promptTokenCount": 9}}, MODEL, ID, CREATED)
    assert e.value.status == 502
    assert e.value.error["type"] == "upstream_error"


# ---------------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------------

def test_stream_reference_c4_text_events():
    stream, chunks = run(STREAM_FIRST, STREAM_LAST)
    assert chunks == [
        {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}]},
        {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
         "choices": [{"index": 0, "delta": {"content": "Okay, let's create a Tetris game in Python for the console! ..."},
                      "logprobs": None, "finish_reason": None}]},
        {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
         "choices": [{"index": 0, "delta": {"content": ", hold functionality, sound, high scores, etc."},
                      "logprobs": None, "finish_reason": None}]},
        {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
         "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
    ]
    assert stream.finish_reason == "stop" and stream.truncated is False
    assert stream.usage == {"prompt_tokens": 4, "completion_tokens": 7989, "total_tokens": 7993,
                            "prompt_tokens_details": {"cached_tokens": 0},
                            "completion_tokens_details": {"reasoning_tokens": 2042}}


def test_stream_feed_returns_chunks_per_event():
    stream = GeminiStream(MODEL, ID, CREATED)
    assert [c["choices"][0]["delta"] for c in stream.feed(copy.deepcopy(STREAM_FIRST))] == [
        {"role": "assistant", "content": ""}, {"content": "Okay, let's create a Tetris game in Python for the console! ..."}]
    assert [c["choices"][0]["delta"] for c in stream.feed(copy.deepcopy(STREAM_LAST))] == [
        {"content": ", hold functionality, sound, high scores, etc."}]
    assert stream.finish_reason is None  # decided at finish()


def test_stream_usage_chunk():
    stream, _ = run(STREAM_FIRST, STREAM_LAST)
    usage_chunk = stream.usage_chunk()
    valid_chunks([usage_chunk])
    assert usage_chunk == {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                           "choices": [], "usage": stream.usage}


def test_stream_usage_chunk_is_none_without_usage():
    stream, _ = run(response(candidate([{"text": "x"}])))
    assert stream.usage is None and stream.usage_chunk() is None


def test_stream_usage_is_the_last_not_the_sum():
    first = response(candidate([{"text": "a"}], finish=None), usage={"promptTokenCount": 5, "candidatesTokenCount": 1})
    second = response(candidate([{"text": "b"}], finish=None), usage={"promptTokenCount": 5, "candidatesTokenCount": 2})
    third = response(candidate([{"text": "c"}]), usage={"promptTokenCount": 5, "candidatesTokenCount": 3,
                                                       "thoughtsTokenCount": 4})
    stream, _ = run(first, second, third)
    assert (stream.usage["prompt_tokens"], stream.usage["completion_tokens"], stream.usage["total_tokens"]) == (5, 7, 12)


def test_stream_usage_ignores_count_less_usage_metadata():
    # Vertex: early chunks may carry only trafficType.
    stream, _ = run(response(candidate([{"text": "a"}]), usage={"promptTokenCount": 5, "candidatesTokenCount": 1}),
                    {"usageMetadata": {"trafficType": "ON_DEMAND"}})
    assert stream.usage["total_tokens"] == 6


def test_stream_function_call_one_event_reference_response_0():
    stream, chunks = run(RESPONSE_0)
    assert deltas(chunks)[0] == (0, {"role": "assistant", "content": None}, None)
    assert deltas(chunks)[2] == (0, {}, "tool_calls")
    assert len(chunks) == 3
    tool_delta = chunks[1]["choices"][0]["delta"]
    assert list(tool_delta) == ["tool_calls"]
    call = tool_delta["tool_calls"][0]
    assert set(call) == {"index", "id", "type", "function"}
    assert (call["index"], call["type"], call["function"]) == (
        0, "function", {"name": "getWeather", "arguments": "{\"location\": \"Tokyo\"}"})
    assert split_tool_call_id(call["id"])[1] == "CikBcsjafFK1...="
    assert stream.finish_reason == "tool_calls"
    assert stream.usage["completion_tokens"] == 118


def test_stream_role_chunk_before_a_function_call_has_null_content():
    chunks = GeminiStream(MODEL, ID, CREATED).feed(response(candidate([{"functionCall": {"name": "now", "args": {}}}])))
    assert deltas(chunks)[0] == (0, {"role": "assistant", "content": None}, None)


def test_stream_role_chunk_before_text_then_a_function_call_has_empty_content():
    chunks = GeminiStream(MODEL, ID, CREATED).feed(response(candidate(
        [{"text": "Checking."}, {"functionCall": {"name": "now", "args": {}}}])))
    assert deltas(chunks)[0] == (0, {"role": "assistant", "content": ""}, None)


def test_stream_role_chunk_skips_an_empty_text_before_a_function_call():
    chunks = GeminiStream(MODEL, ID, CREATED).feed(response(candidate(
        [{"text": ""}, {"functionCall": {"name": "now", "args": {}}}])))
    assert deltas(chunks)[0] == (0, {"role": "assistant", "content": None}, None)


def test_stream_function_call_and_finish_reason_in_different_events():
    stream, chunks = run(response(candidate([{"functionCall": {"name": "now", "args": {}}}], finish=None)),
                         response(candidate([{"text": ""}], finish="STOP")))
    assert deltas(chunks)[-1] == (0, {}, "tool_calls")
    assert stream.finish_reason == "tool_calls"


def test_stream_tool_call_indexes_are_cumulative():
    _, chunks = run(response(candidate([{"text": "Checking."}, {"functionCall": {"name": "a", "args": {}}}],
                                       finish=None)),
                    response(candidate([{"functionCall": {"name": "b", "args": {"x": 1}}},
                                        {"functionCall": {"name": "c", "args": {}}}])))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "a"), (1, "b"), (2, "c")]
    assert len({c["id"] for c in calls}) == 3


def test_stream_thought_parts_are_skipped():
    _, chunks = run(response(candidate([{"text": "hmm", "thought": True}, {"text": "Hi"}])))
    assert [d for _, d, _ in deltas(chunks)] == [{"role": "assistant", "content": ""}, {"content": "Hi"}, {}]


def test_stream_max_tokens():
    stream, chunks = run(response(candidate([{"text": "a"}], finish="MAX_TOKENS")))
    assert deltas(chunks)[-1] == (0, {}, "length") and stream.finish_reason == "length"


def test_stream_without_finish_reason_is_truncated():
    stream, chunks = run(STREAM_FIRST)
    assert deltas(chunks)[-1] == (0, {}, "stop")
    assert stream.truncated is True and stream.finish_reason == "stop"


def test_stream_with_no_events_still_finishes():
    stream, chunks = run()
    assert deltas(chunks) == [(0, {"role": "assistant", "content": ""}, None), (0, {}, "stop")]
    assert stream.truncated is True


def test_stream_error_event_raises():
    stream = GeminiStream(MODEL, ID, CREATED)
    stream.feed(copy.deepcopy(STREAM_FIRST))
    with pytest.raises(UpstreamError) as e:
        stream.feed({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                               "status": "UNAVAILABLE"}})
    assert e.value.status == 503
    assert e.value.error == {"message": "The model is overloaded. Please try again later.",
                             "type": "server_error", "param": None, "code": None}


def test_stream_error_event_without_code_is_500():
    with pytest.raises(UpstreamError) as e:
        GeminiStream(MODEL, ID, CREATED).feed({"error": {"message": "boom"}})
    assert e.value.status == 500 and e.value.error["message"] == "boom"


def test_stream_blocked_prompt_raises():
    with pytest.raises(UpstreamError) as e:
        GeminiStream(MODEL, ID, CREATED).feed({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                               "usageMetadata": {"promptTokenCount": 3}})
    assert e.value.status == 400 and e.value.error["code"] == "content_filter"
    assert "PROHIBITED_CONTENT" in e.value.error["message"]


def test_stream_two_candidates():
    stream, chunks = run(response(candidate([{"text": "A"}], finish=None, index=0),
                                  candidate([{"text": "B"}], finish=None, index=1)),
                         response(candidate([{"text": "a"}], index=0), candidate([{"text": "b"}], index=1)))
    assert deltas(chunks) == [
        (0, {"role": "assistant", "content": ""}, None), (0, {"content": "A"}, None),
        (1, {"role": "assistant", "content": ""}, None), (1, {"content": "B"}, None),
        (0, {"content": "a"}, None), (1, {"content": "b"}, None),
        (0, {}, "stop"), (1, {}, "stop")]
    assert stream.truncated is False


# --- reassembly: the stream adds up to the non-streaming answer ----------------------------------

def reassembly_case(events):
    stream, chunks = run(*events)
    merged = {"candidates": [], "usageMetadata": events[-1]["usageMetadata"]}
    parts = [p for e in events for p in e["candidates"][0]["content"]["parts"]]
    merged["candidates"].append(candidate(parts, finish=events[-1]["candidates"][0].get("finishReason")))
    whole = valid_completion(from_gemini(merged, MODEL, ID, CREATED))
    built = accumulate(chunks)[0]
    message = whole["choices"][0]["message"]
    assert built["content"] == (message["content"] or "")
    assert built["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert [(c["name"], json.loads(c["arguments"]), split_tool_call_id(c["id"])[1])
            for c in built["tool_calls"].values()] == summary(message)
    assert stream.usage == whole["usage"]


def test_reassembly_text():
    reassembly_case([STREAM_FIRST, STREAM_LAST])


def test_reassembly_function_calls_across_events():
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 8, "thoughtsTokenCount": 5}
    reassembly_case([
        response(candidate([{"text": "Checking both."}], finish=None), usage={**usage, "candidatesTokenCount": 3}),
        response(candidate([{"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}},
                             "thoughtSignature": SIG}], finish=None), usage=usage),
        response(candidate([{"functionCall": {"name": "getWeather", "args": {"location": "Paris"}}}]), usage=usage),
    ])


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------

def test_error_api_key_invalid_is_the_gateways_fault():
    e = error_from_gemini(400, copy.deepcopy(ERR_KEY), json.dumps(ERR_KEY))
    assert (e.status, e.upstream_status, e.retry_after, e.reason) == (502, 400, None, "auth")
    assert e.error == {"message": "Gemini rejected the gateway's provider API key: API key not valid. "
                                  "Please pass a valid API key.",
                       "type": "upstream_error", "param": None, "code": "upstream_auth_failed"}


def test_error_401_is_kept_for_the_failover_manager():
    e = error_from_gemini(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                          "status": "UNAUTHENTICATED"}}, "")
    assert (e.status, e.upstream_status, e.reason) == (401, 401, None)
    assert e.error == {"message": "Request had invalid authentication credentials.",
                       "type": "authentication_error", "param": None, "code": None}


def test_error_400_invalid_argument():
    body = {"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.",
                      "status": "INVALID_ARGUMENT"}}
    e = error_from_gemini(400, body, "")
    assert (e.status, e.upstream_status, e.reason) == (400, 400, None)
    assert e.error == {"message": "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.",
                       "type": "invalid_request_error", "param": None, "code": None}


def test_error_400_failed_precondition():
    body = {"error": {"code": 400, "message": "User location is not supported for the API use.",
                      "status": "FAILED_PRECONDITION"}}
    e = error_from_gemini(400, body, "")
    assert (e.status, e.error["type"], e.error["message"]) == (400, "invalid_request_error",
                                                                "User location is not supported for the API use.")


def test_error_403_permission_denied():
    e = error_from_gemini(403, copy.deepcopy(ERR_403), "")
    assert (e.status, e.upstream_status, e.reason) == (403, 403, None)
    assert e.error == {"message": ERR_403["error"]["message"], "type": "permission_error", "param": None,
                       "code": None}


def test_error_404_model_not_found():
    e = error_from_gemini(404, copy.deepcopy(ERR_404), "")
    assert e.status == 404
    assert e.error == {"message": ERR_404["error"]["message"], "type": "invalid_request_error", "param": None,
                       "code": "model_not_found"}


def test_error_429_rate_limit_with_retry_delay():
    e = error_from_gemini(429, copy.deepcopy(ERR_429), "")
    assert (e.status, e.retry_after) == (429, 59)
    assert e.error == {"message": ERR_429["error"]["message"], "type": "rate_limit_error", "param": None,
                       "code": "rate_limit_exceeded"}


def test_error_429_header_retry_after_wins():
    assert error_from_gemini(429, copy.deepcopy(ERR_429), "", retry_after=7).retry_after == 7


@pytest.mark.parametrize("delay, seconds", [("59s", 59), ("1.5s", 2), ("0.2s", 1), ("nonsense", None)])
def test_error_429_retry_delay_parsing(delay, seconds):
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                      "status": "RESOURCE_EXHAUSTED",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}
    assert error_from_gemini(429, body, "").retry_after == seconds


def test_error_429_without_details():
    e = error_from_gemini(429, {"error": {"code": 429, "message": "Resource exhausted.",
                                          "status": "RESOURCE_EXHAUSTED"}}, "")
    assert (e.status, e.retry_after, e.error["code"]) == (429, None, "rate_limit_exceeded")


@pytest.mark.parametrize("status, google_status", [(500, "INTERNAL"), (503, "UNAVAILABLE"),
                                                   (504, "DEADLINE_EXCEEDED")])
def test_error_server_side(status, google_status):
    e = error_from_gemini(status, {"error": {"code": status, "message": "An internal error has occurred.",
                                             "status": google_status}}, "")
    assert (e.status, e.upstream_status) == (status, status)
    assert e.error == {"message": "An internal error has occurred.", "type": "server_error", "param": None,
                       "code": None}


def test_error_499_cancelled_keeps_status():
    e = error_from_gemini(499, {"error": {"code": 499, "message": "The operation was cancelled.",
                                          "status": "CANCELLED"}}, "")
    assert (e.status, e.error["type"]) == (499, "invalid_request_error")


def test_error_context_length_exceeded():
    message = "The input token count (1234567) exceeds the maximum number of tokens allowed (1048576)."
    e = error_from_gemini(400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}, "")
    assert (e.status, e.upstream_status) == (400, 400)
    assert e.error == {"message": message, "type": "invalid_request_error", "param": "messages",
                       "code": "context_length_exceeded"}


def test_error_non_json_body():
    e = error_from_gemini(502, None, "<html><body>Bad Gateway</body></html>")
    assert (e.status, e.upstream_status) == (502, 502)
    assert e.error == {"message": "Gemini answered HTTP 502 without an error body.", "type": "server_error",
                       "param": None, "code": None}


def test_error_non_json_body_on_429_keeps_rate_limit_code():
    e = error_from_gemini(429, None, "Too Many Requests", retry_after=3)
    assert (e.status, e.retry_after, e.error["code"]) == (429, 3, "rate_limit_exceeded")


def test_error_unparsed_json_text_is_read():
    e = error_from_gemini(404, None, json.dumps(ERR_404))
    assert (e.status, e.error["code"], e.error["message"]) == (404, "model_not_found", ERR_404["error"]["message"])


def test_error_array_wrapped_body():
    # The non-SSE stream endpoint wraps errors in a one-element array.
    e = error_from_gemini(429, [copy.deepcopy(ERR_429)], "")
    assert (e.status, e.retry_after) == (429, 59)


def test_translation_does_not_mutate_its_inputs():
    request = req({"role": "system", "content": "s"}, user("w?"),
                  {"role": "assistant", "content": "x", "tool_calls": [WEATHER_CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "{\"t\": 1}"}, user("more"),
                  tools=TOOLS, tool_choice="required",
                  response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
                      "type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                      "required": ["a"], "additionalProperties": False}}})
    before, body = copy.deepcopy(request), copy.deepcopy(RESPONSE_0)
    to_gemini(request)
    from_gemini(body, MODEL, ID, CREATED)
    run(body)
    assert request == before and body == RESPONSE_0


def test_request_allowed_tools_choice_is_dropped():
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "f"}}]}}
    assert "toolConfig" not in to_gemini(req(user("Hi"), tools=TOOLS, tool_choice=choice))
