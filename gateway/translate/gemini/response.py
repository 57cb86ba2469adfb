"""Gemini generateContent response → OpenAI `chat.completion`; also the finish-reason, usage and part
mapping the stream shares."""
import json

from gateway.translate.common import (UpstreamError, completion, error_object, new_tool_call_id,
                                      tool_call_id_with_signature, usage as make_usage)

# Gemini finishReason → OpenAI finish_reason (reference D.1, "Recommended"). Unknown values → "stop".
# STOP becomes "tool_calls" when the candidate produced function calls (see `finish_reason`).
FINISH_REASON_MAP = {
    "MAX_TOKENS": "length",
    **dict.fromkeys(("STOP", "MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS",
                     "MISSING_THOUGHT_SIGNATURE", "NO_IMAGE", "FINISH_REASON_UNSPECIFIED"), "stop"),
    **dict.fromkeys(("SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                     "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER"),
                    "content_filter"),
}


def finish_reason(gemini_reason, has_tool_calls):
    mapped = FINISH_REASON_MAP.get(gemini_reason, "stop")
    # Gemini says STOP after function calls; OpenAI clients run tools only on "tool_calls".
    return "tool_calls" if mapped == "stop" and has_tool_calls else mapped


def _usage(metadata):
    metadata = metadata or {}
    thoughts = metadata.get("thoughtsTokenCount", 0)
    return make_usage(metadata.get("promptTokenCount", 0), metadata.get("candidatesTokenCount", 0) + thoughts,
                      metadata.get("cachedContentTokenCount", 0), thoughts)


def _tool_call(part):
    call = part["functionCall"]
    call_id = tool_call_id_with_signature(call.get("id") or new_tool_call_id(), part.get("thoughtSignature"))
    return {"id": call_id, "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("args") or {},
                                                                       ensure_ascii=False)}}


def _items(candidate):
    """("content", text) and ("tool_call", call) in part order; thoughts and other part kinds skipped."""
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue
        if "text" in part:
            yield "content", part["text"]
        elif "functionCall" in part:
            yield "tool_call", _tool_call(part)


def _no_candidates(body):
    feedback = body.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        detail = f": {feedback['blockReasonMessage']}" if feedback.get("blockReasonMessage") else "."
        return UpstreamError(400, error_object(f"Gemini blocked the prompt (blockReason {feedback['blockReason']})"
                                               f"{detail}", "invalid_request_error", None, "content_filter"),
                             upstream_status=200)
    return UpstreamError(502, error_object("Gemini returned no candidates.", "upstream_error", None,
                                           "bad_upstream_response"), upstream_status=200)


def from_gemini(body, model, id_, created):
    """A generateContent response → an OpenAI `chat.completion`, one choice per candidate."""
    candidates = body.get("candidates") or []
    if not candidates:
        raise _no_candidates(body)
    result = completion(id_, created, model, None, None, _usage(body.get("usageMetadata")))
    result["choices"] = [_choice(candidate, position) for position, candidate in enumerate(candidates)]
    return result


def _choice(candidate, position):
    items = list(_items(candidate))
    texts = [value for kind, value in items if kind == "content"]
    calls = [value for kind, value in items if kind == "tool_call"]
    message = {"role": "assistant", "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    reason = finish_reason(candidate.get("finishReason"), bool(calls))
    return completion(None, None, None, message, reason, None, candidate.get("index", position))["choices"][0]
