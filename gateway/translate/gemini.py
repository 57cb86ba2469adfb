"""OpenAI Chat Completions ⇄ Google Gemini (generativelanguage v1beta), as pure functions.

Conventions (reference sections C and D; where gateways disagree, the choice is said here):
* Tool results: Gemini wants `functionResponse.response` to be a JSON object. A tool message whose text
  parses as a JSON object is sent as that object; anything else (plain text, a list, a number) is
  wrapped as `{"content": "<the text>"}` (LiteLLM's wrapping).
* Thought signatures: Gemini thinking models reject history whose `functionCall` parts lost their
  `thoughtSignature`. OpenAI history has nowhere to keep it but the tool-call id, so the id becomes
  `<call id>__thought__<base64url(signature), unpadded>` (stateless; only `[A-Za-z0-9_-]`, so the id
  is still valid for Anthropic). The format lives in common.py (`tool_call_id_with_signature`,
  `split_tool_call_id`), since every translator cuts it off to send the bare id on.
* Schemas (tool parameters, `json_schema`): Gemini takes an OpenAPI subset (`responseSchema`, not
  `responseJsonSchema`, which older models lack), see `gateway.translate.schema`.
* Usage: prompt = promptTokenCount (cached included), completion = candidates + thoughts,
  cached = cachedContentTokenCount, reasoning = thoughtsTokenCount; total = prompt + completion.
* A missing finishReason is treated like STOP: `tool_calls` when the candidate called a function.
"""
import json
import math
import re
from urllib.parse import urlsplit

from gateway.translate.common import (UpstreamError, chunk, completion, error_object, new_tool_call_id,
                                      split_tool_call_id, text_of, tool_call_id_with_signature,
                                      usage as make_usage, usage_chunk as make_usage_chunk)
from gateway.translate.schema import clean_schema

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


# --- request: OpenAI → Gemini ---------------------------------------------------------------------

def _bad_request(message, param):
    return UpstreamError(400, error_object(message, "invalid_request_error", param))


def _to(field, transform=lambda v: v):
    return lambda value: {field: transform(value)}


def _response_format(response_format):
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return {}
    out = {"responseMimeType": "application/json"}
    schema = clean_schema((response_format.get("json_schema") or {}).get("schema") or {})
    if schema and (schema.get("properties") or schema.get("type") != "OBJECT"):
        out["responseSchema"] = schema
    return out


# OpenAI fields (first non-null wins) → generationConfig fields. Not here, so dropped: user, logprobs,
# top_logprobs, logit_bias, stream, stream_options, parallel_tool_calls, metadata, store, ...
GENERATION_CONFIG = (
    (("temperature",), _to("temperature")),
    (("top_p",), _to("topP")),
    (("max_completion_tokens", "max_tokens"), _to("maxOutputTokens")),
    (("stop",), _to("stopSequences", lambda s: [s] if isinstance(s, str) else list(s))),
    (("n",), _to("candidateCount")),
    (("seed",), _to("seed")),
    (("presence_penalty",), _to("presencePenalty")),
    (("frequency_penalty",), _to("frequencyPenalty")),
    (("response_format",), _response_format),
)

# OpenAI tool_choice string → Gemini functionCallingConfig mode (other forms, e.g. allowed_tools, are dropped).
TOOL_CHOICE_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# Extension → MIME type for images given by URL (Gemini wants a mimeType with fileData).
MIME_BY_EXTENSION = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                     "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf"}
DEFAULT_IMAGE_MIME = "image/jpeg"


def to_gemini(request, default_max_tokens=None):
    """An OpenAI chat request (already validated) → a generateContent body (the model goes in the URL)."""
    system, contents = _contents(request["messages"])
    body = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    declarations = [_declaration(t["function"]) for t in request.get("tools") or []
                    if t.get("type") == "function"]
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = request.get("tool_choice")
        named = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        if named:  # a named function is forced with ANY + that one name
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [named]}}
        elif isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
            body["toolConfig"] = {"functionCallingConfig": {"mode": TOOL_CHOICE_MODES[choice]}}
    config = _generation_config(request, default_max_tokens)
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(request, default_max_tokens):
    config = {}
    for fields, transform in GENERATION_CONFIG:
        value = next((request[f] for f in fields if request.get(f) is not None), None)
        if value is not None:
            config.update(transform(value))
    if "maxOutputTokens" not in config and default_max_tokens is not None:
        config["maxOutputTokens"] = default_max_tokens
    return config


def _declaration(function):
    declaration = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = clean_schema(function.get("parameters") or {})
    if parameters.get("properties"):
        declaration["parameters"] = parameters
    return declaration


def _contents(messages):
    """(systemInstruction parts, contents). Same-role turns are merged: Gemini requires alternation."""
    system, contents, tool_names = [], [], {}
    for i, message in enumerate(messages):
        role = message["role"]
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            parts = _user_parts(message.get("content"), i)
        elif role == "assistant":
            parts = _assistant_parts(message, i, tool_names)
        elif role == "tool":
            parts = [_function_response(message, i, tool_names)]
        else:
            raise _bad_request(f"Role {role!r} is not supported for Gemini models.", f"messages[{i}].role")
        if not parts:  # Gemini rejects a turn without parts (and empty text)
            continue
        gemini_role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        return [], _only_system(system)
    return system, contents


def _only_system(system):
    """The contents for a conversation with no user or model parts left. Gemini refuses an empty `contents`
    (400 "* GenerateContentRequest.contents: contents is not specified"), so system text alone becomes the
    one user turn: the model reads the caller's words once, as an OpenAI model given only a system message
    does, and nothing is made up (no placeholder user text). With no text at all there is nothing to send."""
    if not system:
        raise _bad_request("At least one message must have non-empty content for Gemini models.", "messages")
    return [{"role": "user", "parts": system}]


def _user_parts(content, i):
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content or []):
        kind, param = part.get("type"), f"messages[{i}].content[{j}]"
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part["image_url"]["url"], param + ".image_url.url"))
        elif kind == "input_audio":
            audio = part["input_audio"]
            parts.append({"inlineData": {"mimeType": "audio/" + audio["format"], "data": audio["data"]}})
        elif kind == "file" and ((part.get("file") or {}).get("file_data") or "").startswith("data:"):
            parts.append({"inlineData": _data_url(part["file"]["file_data"], param + ".file.file_data")})
        else:
            raise _bad_request(f"Content part type {kind!r} is not supported for Gemini models.", param)
    return parts


def _image_part(url, param):
    if url.startswith("data:"):
        return {"inlineData": _data_url(url, param)}
    if url.startswith(("http://", "https://")):
        extension = urlsplit(url).path.rsplit("/", 1)[-1].rpartition(".")[2].lower()
        return {"fileData": {"mimeType": MIME_BY_EXTENSION.get(extension, DEFAULT_IMAGE_MIME), "fileUri": url}}
    raise _bad_request("Image URLs must be http(s) URLs or base64 data: URLs.", param)


def _data_url(url, param):
    header, comma, data = url[len("data:"):].partition(",")
    mime_type = header.split(";")[0]
    if not comma or not header.endswith(";base64") or not mime_type:
        raise _bad_request("A data: URL must look like data:<mime type>;base64,<data>.", param)
    return {"mimeType": mime_type, "data": data}


def _assistant_parts(message, i, tool_names):
    text = text_of(message.get("content"))
    parts = [{"text": text}] if text else []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        tool_names[call["id"]] = function["name"]
        args = _arguments(function.get("arguments"), f"messages[{i}].tool_calls[{j}].function.arguments")
        part = {"functionCall": {"name": function["name"], "args": args}}
        signature = split_tool_call_id(call["id"])[1]
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _arguments(arguments, param):
    try:
        args = json.loads(arguments) if arguments else {}
    except ValueError as e:
        raise _bad_request(f"Tool call arguments are not valid JSON ({e}).", param) from None
    if not isinstance(args, dict):
        raise _bad_request("Tool call arguments must be a JSON object for Gemini models.", param)
    return args


def _function_response(message, i, tool_names):
    # OpenAI tool messages carry no function name; Gemini requires it, so recover it from the call.
    name = tool_names.get(message.get("tool_call_id"))
    if name is None:
        raise _bad_request(f"Tool message tool_call_id {message.get('tool_call_id')!r} does not answer any "
                           "earlier assistant tool call.", f"messages[{i}].tool_call_id")
    text = text_of(message.get("content"))
    try:
        result = json.loads(text)
    except ValueError:
        result = None
    return {"functionResponse": {"name": name, "response": result if isinstance(result, dict)
                                 else {"content": text}}}


# --- response: Gemini → OpenAI --------------------------------------------------------------------

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


class GeminiStream:
    """Gemini SSE events (each a whole GenerateContentResponse) → OpenAI chunks.

    Text parts are new fragments, function calls arrive whole, usageMetadata is cumulative (the last
    one wins), and the body just ends (no [DONE]); `finish()` closes every choice. Without any
    finishReason it still finishes, with "stop", and sets `truncated` for the caller to judge.
    """

    def __init__(self, model, id_, created):
        self.model, self.id, self.created = model, id_, created
        self.finish_reason = None
        self.usage = None
        self.truncated = False
        self._calls = {}    # candidate index → tool calls emitted so far (insertion order = choice order)
        self._reasons = {}  # candidate index → Gemini finishReason

    def _chunk(self, delta, index, reason=None):
        return chunk(self.id, self.created, self.model, delta, reason, index)

    def _start(self, index, content=""):
        self._calls[index] = 0
        return self._chunk({"role": "assistant", "content": content}, index)

    def feed(self, data):
        if "error" in data:
            code = (data["error"] or {}).get("code") if isinstance(data["error"], dict) else None
            raise error_from_gemini(code if isinstance(code, int) and code >= 400 else 500, data, "")
        candidates = data.get("candidates") or []
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            raise _no_candidates(data)
        metadata = data.get("usageMetadata") or {}
        if any(key.endswith("TokenCount") for key in metadata):  # Vertex sends count-less early events
            self.usage = _usage(metadata)
        out = []
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            items = list(_items(candidate))
            if index not in self._calls:
                # As OpenAI: content null in the role chunk when the answer opens with a tool call.
                opens_with = next((kind for kind, value in items if kind == "tool_call" or value), None)
                out.append(self._start(index, None if opens_with == "tool_call" else ""))
            for kind, value in items:
                if kind == "content" and value:
                    out.append(self._chunk({"content": value}, index))
                elif kind == "tool_call":
                    out.append(self._chunk({"tool_calls": [{"index": self._calls[index], **value}]}, index))
                    self._calls[index] += 1
            if candidate.get("finishReason"):
                self._reasons[index] = candidate["finishReason"]
        return out

    def finish(self):
        out = [] if self._calls else [self._start(0)]
        for index, calls in self._calls.items():
            if index not in self._reasons:
                self.truncated = True
            reason = finish_reason(self._reasons.get(index), calls > 0)
            out.append(self._chunk({}, index, reason))
            self.finish_reason = self.finish_reason or reason
        return out

    def usage_chunk(self):
        """The `choices: []` usage chunk, or None when Gemini reported no usage at all."""
        return make_usage_chunk(self.id, self.created, self.model, self.usage) if self.usage else None


# --- errors ----------------------------------------------------------------------------------------

# Gemini HTTP status → OpenAI error (type, code); other statuses: server_error from 500 up, else
# invalid_request_error.
ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", None),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
# Gemini answers a bad key with 400 INVALID_ARGUMENT + this reason: the key is the gateway's, not the client's.
PROVIDER_KEY_REASONS = frozenset({"API_KEY_INVALID"})
UPSTREAM_AUTH_CODE = "upstream_auth_failed"  # the code the failover manager uses for the same case
_CONTEXT_LENGTH = re.compile(r"input token count.*exceeds the maximum number of tokens", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def error_from_gemini(status, body, text, retry_after=None):
    """A Google RPC error (`{"error": {code, message, status, details}}`) → UpstreamError.

    The provider's message and status are kept (`upstream_status` is always Gemini's own), except:
    * a rejected provider key, which Gemini reports as 400 INVALID_ARGUMENT + API_KEY_INVALID: that key is
      the gateway's, so it must neither reach the client as "your request is wrong" (400) nor as "your key
      is wrong" (401). It becomes what the failover manager makes of a 401/403 — 502 `upstream_error` /
      `upstream_auth_failed` with `reason="auth"` — so it fails over instead of being final;
    * a too-long prompt, which becomes OpenAI's 400 `context_length_exceeded`.
    401/403 stay as they are: the failover manager already treats them as our credential problem.
    """
    error = _rpc_error(body, text)
    message = error.get("message") or f"Gemini answered HTTP {status} without an error body."
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    type_, code = ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    answer, param, reason = status, None, None
    if PROVIDER_KEY_REASONS & {d.get("reason") for d in details}:
        answer, type_, code, reason = 502, "upstream_error", UPSTREAM_AUTH_CODE, "auth"
        message = f"Gemini rejected the gateway's provider API key: {message}"
    elif _CONTEXT_LENGTH.search(message):
        answer, type_, param, code = 400, "invalid_request_error", "messages", "context_length_exceeded"
    elif status == 429 and retry_after is None:
        retry_after = _retry_delay(details)
    return UpstreamError(answer, error_object(message, type_, param, code), retry_after, status, reason)


def _rpc_error(body, text):
    if body is None and text:
        try:
            body = json.loads(text)
        except ValueError:
            return {}
    if isinstance(body, list) and len(body) == 1:  # the non-SSE stream wraps errors in an array
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details):
    """Seconds from google.rpc.RetryInfo `retryDelay` (a Duration such as "59s"), rounded up."""
    for detail in details:
        match = _DURATION.match(str(detail.get("retryDelay", "")).strip())
        if match:
            return math.ceil(float(match.group(1)))
    return None
