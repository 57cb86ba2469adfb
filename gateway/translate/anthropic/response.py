"""Anthropic non-streaming message → OpenAI `chat.completion`; also the finish-reason and usage mapping
the stream shares."""
import json

from gateway.translate.common import completion, usage

from .request import JSON_TOOL

# Anthropic stop_reason → OpenAI finish_reason (reference D.1). Unknown values become "stop".
FINISH_REASON = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}


def _dumps(value):
    # Default separators on purpose: they match the spacing of Anthropic's streamed partial_json,
    # so streamed and non-streamed arguments agree byte for byte.
    return json.dumps(value, ensure_ascii=False)


def from_anthropic(body, model, id_, created):
    """An Anthropic non-streaming message → an OpenAI `chat.completion`."""
    texts, tool_calls, json_text = [], [], None
    for block in body.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use" and block.get("name") == JSON_TOOL:
            json_text = _dumps(block.get("input") or {})
        elif kind == "tool_use":
            arguments = _dumps(block.get("input") or {})
            tool_calls.append({"id": block["id"], "type": "function",
                               "function": {"name": block["name"], "arguments": arguments}})
        # thinking, redacted_thinking, server_tool_use, *_tool_result: no OpenAI equivalent
    # In JSON mode the content must be the JSON alone, so any text around the tool call is dropped.
    content = json_text if json_text is not None else "".join(texts)
    message = {"role": "assistant", "content": content or (None if tool_calls else ""), "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish = _finish(body.get("stop_reason"), json_text is not None, bool(tool_calls))
    return completion(id_, created, model, message, finish, _usage(body.get("usage") or {}))


def _finish(stop_reason, json_mode, has_tool_calls):
    reason = FINISH_REASON.get(stop_reason, "stop")
    if reason == "tool_calls" and json_mode and not has_tool_calls:
        return "stop"  # the JSON tool carried the answer; there is no call for the client to run
    return reason


def _usage(raw):
    """Anthropic usage → OpenAI usage, by LiteLLM's convention (reference D.5), the one that keeps
    OpenAI's total = prompt + completion.

    Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens is the whole
    prompt, cached tokens a subset. So prompt_tokens = input_tokens + cache_creation_input_tokens +
    cache_read_input_tokens, completion_tokens = output_tokens, cached_tokens = cache reads. Cache
    writes are billed at a premium: prompt_tokens_details.cache_write_tokens (an OpenAI spec field)
    carries them for the cost code. reasoning_tokens = output_tokens_details.thinking_tokens if sent.
    """
    written = raw.get("cache_creation_input_tokens") or 0
    read = raw.get("cache_read_input_tokens") or 0
    thinking = (raw.get("output_tokens_details") or {}).get("thinking_tokens") or 0
    result = usage((raw.get("input_tokens") or 0) + written + read, raw.get("output_tokens") or 0,
                   cached_tokens=read, reasoning_tokens=thinking)
    result["prompt_tokens_details"]["cache_write_tokens"] = written
    return result

