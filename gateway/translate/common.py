"""Shapes of OpenAI's chat completion API that every translator builds: one source of truth.

Pure functions only: no I/O, no clock except where a caller passes none.
"""
import base64
import hashlib
import time

from gateway import ids

FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")


class UpstreamError(Exception):
    """An upstream said no (HTTP error, error event mid-stream, blocked prompt).

    `status` is the HTTP status the gateway would answer with, `error` the OpenAI error object
    (`{"message", "type", "param", "code"}`), `retry_after` seconds when the upstream gave one,
    `upstream_status` the status the provider itself sent (None for stream events), `reason` a short
    word for what went wrong in transport (timeout, connect, reset, cut, stall), None for HTTP errors.
    """

    def __init__(self, status, error, retry_after=None, upstream_status=None, reason=None):
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.upstream_status = upstream_status if upstream_status is not None else status
        self.reason = reason


def error_object(message, type_="invalid_request_error", param=None, code=None):
    """OpenAI's error object. Its fields are strings (param and code may be null) whatever an upstream's error
    body held: clients and the gateway's own code (a 300-character cut for the log) take them as text."""
    return {"message": message if type(message) is str else str(message),
            "type": type_ if type(type_) is str else str(type_),
            "param": param if param is None or type(param) is str else str(param),
            "code": code if code is None or type(code) is str else str(code)}


def refuse_legacy_functions(request, family):
    """OpenAI's deprecated `functions` / `function_call` (and assistant messages carrying a `function_call`) have
    no translation here: a 400 naming them, rather than an answer that silently ignored the functions (which
    the Claude and Gemini translators did, finish_reason "stop" where a forced call was asked for)."""
    for field in ("functions", "function_call"):
        if request.get(field) is not None:
            raise UpstreamError(400, error_object(
                f"'{field}' (deprecated by OpenAI) is not supported for {family} models; send 'tools' and "
                "'tool_choice' instead.", "invalid_request_error", field, "unsupported_parameter"))
    for i, message in enumerate(request.get("messages") or ()):
        if message.get("function_call") is not None:
            raise UpstreamError(400, error_object(
                f"An assistant message's 'function_call' (deprecated by OpenAI) is not supported for {family} "
                "models; send 'tool_calls' instead.", "invalid_request_error", f"messages[{i}].function_call",
                "unsupported_parameter"))


def new_completion_id():
    return "chatcmpl-" + ids.token_urlsafe(21).replace("-", "a").replace("_", "b")


def new_tool_call_id():
    return "call_" + ids.token_urlsafe(18).replace("-", "a").replace("_", "b")


# Gemini's thought signatures ride in tool-call ids (see gemini/__init__.py); every translator cuts them off.
SIGNATURE_SEPARATOR = "__thought__"


def tool_call_id_with_signature(call_id, signature):
    if not signature:
        return call_id
    return call_id + SIGNATURE_SEPARATOR + base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")


def split_tool_call_id(tool_call_id):
    """(bare id, thought signature or None). An undecodable suffix is left in the id, not guessed at."""
    base, sep, encoded = (tool_call_id or "").partition(SIGNATURE_SEPARATOR)
    if not sep or not encoded:
        return tool_call_id, None
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        return base, base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return tool_call_id, None


def id_digest(text, length=16):
    """A short stable fingerprint of `text` (hex), for ids a provider would refuse as they are: the same id
    maps to the same replacement wherever it appears (a tool call and the result that answers it)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def completion(id_, created, model, message, finish_reason, usage, index=0):
    """A whole `chat.completion` with one choice."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def chunk(id_, created, model, delta, finish_reason=None, index=0):
    """One `chat.completion.chunk` with one choice."""
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(id_, created, model, usage):
    """The final `choices: []` chunk OpenAI sends when `stream_options.include_usage` is set."""
    return {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": usage}


def usage(prompt_tokens, completion_tokens, cached_tokens=0, reasoning_tokens=0):
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def now():
    return int(time.time())


def text_of(content):
    """The text of an OpenAI message `content` (string, list of parts, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
