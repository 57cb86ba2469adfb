"""OpenAI request translation (tool-call ids): one case per test, literal inputs and outputs."""
import copy

from gateway.translate.openai import to_openai

MODEL = "gpt-4o-mini"
# A gemini-2.5-flash tool-call id as the gateway hands it out: call id + "__thought__" + the signature
# (translate/common.py `tool_call_id_with_signature`); 110 characters, real signatures make it longer.
GEMINI_ID = ("call_Qk9yWbRaXUq3fM1vT7aNcZ0p__thought__Q2lRQmNzamFmTndNM2IyTHE5WHYweUhoMWJKcDRVdUY1UzJ0cThtRDZRZVc3"
             "clpjS3BVPQ")
# 51 characters, reported against OpenAI's 40-character limit in github.com/vercel/ai/issues/8132.
LONG_ID = "ws_689e2d4880a0819d98acca37694989b00b15d90494fc6b87"


def call(id_):
    return {"id": id_, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}


def history(id_):
    return [{"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call(id_)]},
            {"role": "tool", "tool_call_id": id_, "content": "cold"}]


def messages_sent(id_):
    return to_openai({"model": "gpt-4o-mini", "messages": history(id_)}, MODEL, False)["messages"]


def test_gemini_signature_is_cut_from_the_assistant_tool_call_id():
    assert messages_sent(GEMINI_ID)[1] == {"role": "assistant", "content": None,
                                           "tool_calls": [call("call_Qk9yWbRaXUq3fM1vT7aNcZ0p")]}


def test_gemini_signature_is_cut_from_the_tool_message_tool_call_id():
    assert messages_sent(GEMINI_ID)[2] == {"role": "tool", "tool_call_id": "call_Qk9yWbRaXUq3fM1vT7aNcZ0p",
                                           "content": "cold"}


def test_id_over_40_characters_becomes_a_40_character_prefix_and_hash_in_the_assistant_call():
    assert messages_sent(LONG_ID)[1]["tool_calls"][0]["id"] == "ws_689e2d4880a0819d98ac_4560ca41a768296d"


def test_id_over_40_characters_becomes_the_same_prefix_and_hash_in_the_tool_message():
    assert messages_sent(LONG_ID)[2]["tool_call_id"] == "ws_689e2d4880a0819d98ac_4560ca41a768296d"


def test_id_of_40_characters_passes_unchanged():
    assert messages_sent("call_" + "x" * 35)[2]["tool_call_id"] == "call_" + "x" * 35


def test_openai_id_passes_unchanged():
    assert messages_sent("call_abc123") == history("call_abc123")


def test_client_request_is_left_as_it_was():
    request = {"model": "gpt-4o-mini", "messages": history(GEMINI_ID)}
    before = copy.deepcopy(request)
    to_openai(request, MODEL, False)
    assert request == before
