"""OpenAI's deprecated `functions` / `function_call`: refused for Claude and Gemini with a 400 naming them, where
they were silently dropped (a forced function call came back as plain text, finish_reason "stop")."""
import json

import pytest

from gateway.translate.anthropic import to_anthropic
from gateway.translate.common import UpstreamError
from gateway.translate.gemini import to_gemini

FUNCTIONS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
USER = {"role": "user", "content": "Weather in Paris?"}
TRANSLATORS = [pytest.param(lambda r: to_anthropic(r, "claude-haiku-4-5", 1024), id="claude"),
               pytest.param(to_gemini, id="gemini")]


@pytest.mark.parametrize("translate", TRANSLATORS)
@pytest.mark.parametrize("fields, param", [
    ({"functions": FUNCTIONS}, "functions"),
    ({"functions": FUNCTIONS, "function_call": {"name": "get_weather"}}, "functions"),
    ({"function_call": "auto"}, "function_call"),
])
def test_legacy_function_fields_are_a_400_naming_them(translate, fields, param):
    with pytest.raises(UpstreamError) as e:
        translate({"model": "m", "messages": [USER], **fields})
    assert (e.value.status, e.value.error["param"], e.value.error["code"]) == (400, param, "unsupported_parameter")
    assert "tools" in e.value.error["message"]


@pytest.mark.parametrize("translate", TRANSLATORS)
def test_an_assistant_function_call_in_the_history_is_a_400_naming_it(translate):
    history = [USER, {"role": "assistant", "content": None,
                      "function_call": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
               {"role": "function", "name": "get_weather", "content": "18C"}]
    with pytest.raises(UpstreamError) as e:
        translate({"model": "m", "messages": history})
    assert (e.value.status, e.value.error["param"]) == (400, "messages[1].function_call")


@pytest.mark.parametrize("translate", TRANSLATORS)
def test_tools_are_what_goes_instead(translate):
    body = translate({"model": "m", "messages": [USER], "tools": [{"type": "function", "function": FUNCTIONS[0]}],
                      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    assert "get_weather" in json.dumps(body["tools"])
