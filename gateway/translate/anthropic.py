"""OpenAI Chat Completions ⇄ Anthropic Messages: requests, responses, stream events and errors.

Pure: dicts in, dicts out, no I/O. Wire facts and the mapping choices follow the "Recommended"
columns of shared/reference/provider-wire-formats.md (sections B and D).

Choices:
* System and developer messages, wherever they appear, are joined with "\\n\\n" into one top-level
  `system` string (Anthropic has no system role inside `messages`).
* JSON mode (`response_format` json_schema / json_object) is the forced-tool trick: a tool named
  `json_tool_call` with the requested schema. A json-mode user expects `message.content` to *be* a
  JSON object; a tool input is guaranteed to be one, a system instruction only asks for it.
  Responses unwrap that tool's input into `content` with finish_reason "stop", found by name.
* `temperature` is clamped to Anthropic's maximum 1.0: OpenAI's 1-2 means "more random than the
  default", nearest to Anthropic's 1.0. Rejecting would refuse valid OpenAI requests; rescaling
  (t/2) would change the meaning of common values such as 0.7.
* `temperature` and `top_p` together: `top_p` is dropped. Claude Sonnet 4.5, Haiku 4.5, Opus 4.1 and
  later answer 400 "`temperature` and `top_p` cannot both be specified for this model. Please use only
  one." (BerriAI/litellm#15097, di-sukharev/opencommit#520), and Anthropic's API reference tells callers
  of every model to "either alter temperature or top_p, but not both". So the rule holds for every
  Claude model rather than hanging on a per-model flag each new model row would have to get right: older
  models that accept both (3.x, Sonnet 4) lose only a combination Anthropic advises against, and the
  3.5 rows of the model table name retired models. `temperature` is the one kept, as in the sampling
  example of Anthropic's Claude 4.5 migration guide.
"""
import json
import re

from .common import (UpstreamError, chunk, completion, error_object, id_digest, split_tool_call_id, text_of,
                     usage, usage_chunk)

# Anthropic stop_reason → OpenAI finish_reason (reference D.1). Unknown values become "stop".
FINISH_REASON = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}

JSON_TOOL = "json_tool_call"
_FORCE_JSON = {"type": "tool", "name": JSON_TOOL}

_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}

# Anthropic error.type → (status Anthropic sends, OpenAI type, OpenAI code) (reference B.6, D.7). Types
# copy OpenAI's verbatim bodies where the reference has one (a missing model is invalid_request_error /
# model_not_found); else they keep Anthropic's name: OpenAI SDKs pick exceptions by status, not type.
_ERRORS = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "billing_error": (402, "insufficient_quota", "insufficient_quota"),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "invalid_request_error", "model_not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "timeout_error": (504, "timeout_error", "timeout"),
    "overloaded_error": (529, "service_unavailable_error", "overloaded"),
}
_KIND_BY_STATUS = {status: kind for kind, (status, _, _) in _ERRORS.items()}
# 529 is Anthropic's own; OpenAI clients know 503 as "overloaded, retry later".
_GATEWAY_STATUS = {529: 503}
# Anthropic says "prompt is too long: 208310 tokens > 200000 maximum" or "input length and
# `max_tokens` exceed context limit: ..."; OpenAI clients look for code context_length_exceeded.
_CONTEXT_LENGTH = ("prompt is too long", "exceed context limit")


# Anthropic answers 400 "messages.N.content.M.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
# (verbatim in tailcallhq/forgecode#1142, BlockRunAI/ClawRouter#17); ids from other gateways or MCP
# clients may hold dots, colons, pipes.
_NOT_IN_TOOL_USE_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _bad_request(message, param):
    return UpstreamError(400, error_object(message, param=param))


def _dumps(value):
    # Default separators on purpose: they match the spacing of Anthropic's streamed partial_json,
    # so streamed and non-streamed arguments agree byte for byte.
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------- request: OpenAI → Anthropic
def to_anthropic(request, model, default_max_tokens):
    """An OpenAI chat request body (already validated) → an Anthropic /v1/messages body."""
    if request.get("n") not in (None, 1):
        raise _bad_request("This model returns one choice per request; n must be 1.", "n")
    system, messages = _messages(request["messages"])
    body = {"model": model, "messages": messages}
    if system:
        body["system"] = system
    for field, (target, convert) in _PARAMS.items():
        value = request.get(field)
        converted = convert(value) if value is not None else None
        if converted is not None:
            body.setdefault(target, converted)
    if "temperature" in body:  # why: see the module docstring
        body.pop("top_p", None)
    body.setdefault("max_tokens", default_max_tokens)  # required by Anthropic, optional in OpenAI
    tools, choice = _tools(request)
    extras = {"tools": tools, "tool_choice": choice, "stream": True if request.get("stream") else None}
    body.update((key, value) for key, value in extras.items() if value)
    return body


def _stop_sequences(stop):
    # Anthropic rejects whitespace-only stop sequences.
    sequences = [s for s in ([stop] if isinstance(stop, str) else stop) if s.strip()]
    return sequences or None


# OpenAI field → (Anthropic field, convert); a convert returning None drops the field; the first field
# to claim a target wins. Unlisted OpenAI fields (seed, logprobs, penalties, logit_bias, stream_options,
# store, metadata, service_tier, ...) have no Anthropic equivalent and are dropped.
_PARAMS = {
    "max_completion_tokens": ("max_tokens", lambda n: n),  # the non-deprecated name wins
    "max_tokens": ("max_tokens", lambda n: n),
    "temperature": ("temperature", lambda t: min(t, 1.0)),  # why: see the module docstring
    "top_p": ("top_p", lambda p: p),
    "stop": ("stop_sequences", _stop_sequences),
    "user": ("metadata", lambda u: {"user_id": u}),
    "safety_identifier": ("metadata", lambda u: {"user_id": u}),  # OpenAI's successor to `user`
}


def _messages(messages):
    """OpenAI messages → (system string, alternating Anthropic turns)."""
    system, turns = [], []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text.strip():
                system.append(text)
            continue
        if role not in _ROLES:
            raise _bad_request(f"Messages with role '{role}' are not supported by this model.",
                               f"messages[{i}].role")
        target, blocks_of = _ROLES[role]
        blocks = blocks_of(message, i)
        if not blocks:  # Anthropic rejects empty turns; dropping one loses nothing
            continue
        if turns and turns[-1]["role"] == target:  # Anthropic wants strict user/assistant alternation
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": target, "content": blocks})
    if not turns:
        return "", _only_system(system)
    for turn in turns:
        if turn["role"] == "user":  # tool_result blocks must open the turn after a tool_use turn
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if turns[-1]["role"] == "assistant" and turns[-1]["content"][-1]["type"] == "text":
        # A final assistant turn is a prefill, and Anthropic rejects one ending in whitespace.
        # Whitespace-only blocks are gone already, so this never leaves an empty block.
        last = turns[-1]["content"][-1]
        last["text"] = last["text"].rstrip()
    return "\n\n".join(system), turns


def _only_system(system):
    """The turns for a conversation with no user or assistant content left. Anthropic refuses an empty
    `messages` ("messages: at least one message is required"), so system text alone becomes the one user
    turn: the model reads the caller's words once, as an OpenAI model given only a system message does,
    and nothing is made up (no placeholder user text). With no text at all there is nothing to send."""
    if not system:
        raise _bad_request("At least one message must have non-empty content for this model.", "messages")
    return [{"role": "user", "content": _text("\n\n".join(system))}]


def _text(text):
    # Anthropic rejects empty and whitespace-only text blocks.
    return [{"type": "text", "text": text}] if text.strip() else []


def _user_blocks(message, i):
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    blocks = []
    for j, part in enumerate(parts):
        convert = _PARTS.get(part.get("type"))
        if convert is None:
            raise _bad_request(f"Content part type '{part.get('type')}' is not supported by this model.",
                               f"messages[{i}].content[{j}]")
        blocks += convert(part, f"messages[{i}].content[{j}]")
    return blocks


def _media(url, param):
    """A data: URL or an http(s) URL → an Anthropic image (or, for PDF, document) block."""
    if url.startswith("data:"):
        media_type, sep, data = url[len("data:"):].partition(";base64,")
        if not sep:
            raise _bad_request("Only base64 data URLs are supported.", param)
        kind = "document" if media_type == "application/pdf" else "image"
        return [{"type": kind, "source": {"type": "base64", "media_type": media_type, "data": data}}]
    if url.startswith(("http://", "https://")):
        return [{"type": "image", "source": {"type": "url", "url": url}}]
    raise _bad_request("Image URLs must be http(s) URLs or base64 data URLs.", param)


_PARTS = {  # OpenAI user content part type → Anthropic blocks; other types (audio, file) are refused
    "text": lambda part, param: _text(part.get("text") or ""),
    "image_url": lambda part, param: _media(part["image_url"]["url"], param),
}


def _assistant_blocks(message, i):
    blocks = _text(text_of(message.get("content")))
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        blocks.append({"type": "tool_use", "id": tool_use_id(call["id"]), "name": function["name"],
                       "input": _tool_input(function.get("arguments"), i, j)})
    return blocks


def _tool_input(arguments, i, j):
    try:
        value = json.loads(arguments) if arguments and arguments.strip() else {}  # "" = no arguments
    except ValueError:  # the model or the client produced broken JSON
        value = None
    if not isinstance(value, dict):  # Anthropic's tool_use.input must be an object
        raise _bad_request(f"messages[{i}].tool_calls[{j}].function.arguments is not a JSON object.",
                           f"messages[{i}].tool_calls")
    return value


def tool_use_id(call_id):
    """An id Anthropic accepts for one from any history. The Gemini thought signature the gateway appends
    means nothing to Claude and is cut off (`split_tool_call_id`); an id with characters outside
    [a-zA-Z0-9_-] has them replaced by "_" and a hash of the original appended, so "a.b" and "a:b" stay
    apart and the tool_use and the tool_result answering it still carry the same id."""
    bare = split_tool_call_id(call_id)[0]
    if bare and not _NOT_IN_TOOL_USE_ID.search(bare):
        return bare
    return _NOT_IN_TOOL_USE_ID.sub("_", bare) + "_" + id_digest(bare)


def _tool_blocks(message, i):
    block = {"type": "tool_result", "tool_use_id": tool_use_id(message["tool_call_id"])}
    text = text_of(message.get("content"))  # optional in a tool_result; "" is not worth sending
    return [{**block, "content": text} if text else block]


# OpenAI role → (Anthropic role, blocks of one message). Tool results travel in user turns.
_ROLES = {"user": ("user", _user_blocks), "assistant": ("assistant", _assistant_blocks),
          "tool": ("user", _tool_blocks)}


def _tool(name, description, schema):
    # Anthropic requires an object input_schema; OpenAI lets `parameters` be omitted.
    tool = {"name": name, "input_schema": {"type": "object", "properties": {}, **(schema or {})}}
    return {**tool, "description": description} if description else tool


def _tools(request):
    """(tools, tool_choice) for Anthropic, with JSON mode folded in as one more tool."""
    tools = [_tool(f["name"], f.get("description"), f.get("parameters"))
             for f in (tool["function"] for tool in request.get("tools") or [])]
    choice = _tool_choice(request.get("tool_choice")) if tools else None  # no tools, nothing to choose
    json_tool = _json_tool(request.get("response_format"))
    if json_tool:
        choice = _json_mode_choice(choice, bool(tools))
        tools.append(json_tool)
    if tools and request.get("parallel_tool_calls") is False:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":  # Anthropic accepts the flag on auto/any/tool only
            choice = {**choice, "disable_parallel_tool_use": True}
    return tools, choice


def _tool_choice(value):
    if value is None or isinstance(value, str) and value in _TOOL_CHOICE:
        return dict(_TOOL_CHOICE[value]) if value else None
    if isinstance(value, dict) and value.get("type") == "function":
        return {"type": "tool", "name": value["function"]["name"]}
    raise _bad_request("This tool_choice is not supported by this model.", "tool_choice")


def _json_tool(response_format):
    kind = (response_format or {}).get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return _tool(JSON_TOOL, spec.get("description"), spec.get("schema"))
    return _tool(JSON_TOOL, None, None) if kind == "json_object" else None


def _json_mode_choice(choice, has_tools):
    """In JSON mode the model must answer through a tool call. Without tools of the caller's, that is
    the JSON tool; with them, any tool ("any"), so the model may still call the caller's tools and
    answers through the JSON tool when done. A named tool stays forced; "none" forces the JSON tool."""
    if not has_tools or choice == {"type": "none"}:
        return dict(_FORCE_JSON)
    if choice is None or choice["type"] in ("auto", "any"):
        return {"type": "any"}
    return choice


# ---------------------------------------------------------------- response: Anthropic → OpenAI
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


# ---------------------------------------------------------------- stream: Anthropic SSE → OpenAI chunks
class AnthropicStream:
    """Turns Anthropic SSE events into OpenAI `chat.completion.chunk` dicts, one event at a time.

    After the stream: `finish_reason` (None if message_stop never came), `usage` (None before
    message_start), `done` (True after message_stop).
    """

    def __init__(self, model, id_, created):
        self.model, self.id, self.created = model, id_, created
        self.finish_reason, self.done = None, False
        self._raw_usage, self._stop_reason = None, None
        self._blocks = {}  # Anthropic block index → {"k": OpenAI tool index or None for JSON, "args": bool}
        self._tool_calls, self._json_mode = 0, False
        self._role_sent = False

    @property
    def usage(self):
        return _usage(self._raw_usage) if self._raw_usage is not None else None

    def usage_chunk(self):
        """The final `choices: []` chunk for clients that asked for stream_options.include_usage."""
        return usage_chunk(self.id, self.created, self.model, self.usage)

    def feed(self, event, data):
        """One SSE event (name may be "", then data["type"] names it) → the chunks to send, maybe none."""
        handler = self._HANDLERS.get(event or data.get("type"))
        return handler(self, data) if handler else []  # ping and unknown future events

    def _chunk(self, delta, finish_reason=None):  # choice index is always 0, whatever the block index
        return chunk(self.id, self.created, self.model, delta, finish_reason)

    def _arguments(self, block, fragment):
        if block["k"] is None:  # the JSON tool's input is the answer itself
            return self._chunk({"content": fragment})
        return self._chunk({"tool_calls": [{"index": block["k"], "function": {"arguments": fragment}}]})

    def _role(self, content=""):
        """OpenAI's first chunk, once: `content` "" before text, None when the answer opens with a tool call."""
        if self._role_sent:
            return []
        self._role_sent = True
        return [self._chunk({"role": "assistant", "content": content})]

    def _message_start(self, data):
        self._raw_usage = dict((data.get("message") or {}).get("usage") or {})
        return []  # the role chunk waits for the first block, which says whether text or a tool call comes

    def _block_start(self, data):
        block = data.get("content_block") or {}
        calls_a_tool = block.get("type") == "tool_use" and block.get("name") != JSON_TOOL
        role = self._role(None if calls_a_tool else "")
        if block.get("type") == "text" and block.get("text"):
            return role + [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return role  # text (empty), thinking, server tools
        if block.get("name") == JSON_TOOL:
            self._json_mode = True
            self._blocks[data.get("index")] = {"k": None, "args": False}
            return role
        # OpenAI's index counts tool calls only; Anthropic's counts every content block.
        k, self._tool_calls = self._tool_calls, self._tool_calls + 1
        self._blocks[data.get("index")] = {"k": k, "args": False}
        # The block's "input": {} is a placeholder; the arguments come as input_json_delta fragments.
        return role + [self._chunk({"tool_calls": [{"index": k, "id": block["id"], "type": "function",
                                                    "function": {"name": block["name"], "arguments": ""}}]})]

    def _block_delta(self, data):
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta["text"]})] if delta.get("text") else []
        block = self._blocks.get(data.get("index"))
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and block:
            block["args"] = True
            return [self._arguments(block, delta["partial_json"])]
        return []  # empty fragments; thinking, signature and citations deltas

    def _block_stop(self, data):
        block = self._blocks.get(data.get("index"))
        if block and not block["args"]:
            # A call without arguments may stream no JSON at all; clients parse arguments, so send "{}".
            block["args"] = True
            return [self._arguments(block, "{}")]
        return []

    def _message_delta(self, data):
        self._stop_reason = (data.get("delta") or {}).get("stop_reason") or self._stop_reason
        # message_delta usage is cumulative: it replaces message_start's counts (output_tokens there
        # is a placeholder), never adds to them.
        counts = {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
        self._raw_usage = {**(self._raw_usage or {}), **counts}
        return []

    def _message_stop(self, data):
        self.finish_reason = _finish(self._stop_reason, self._json_mode, self._tool_calls > 0)
        self.done = True
        return self._role() + [self._chunk({}, self.finish_reason)]

    def finish(self):
        """The body ended. After message_delta the answer is whole (stop reason and final usage are in),
        so a missing message_stop only loses the terminator: finish as it would have. Before it, the
        stream was cut: nothing to add, and `finish_reason` stays None."""
        if self.done or self._stop_reason is None:
            return []
        return self._message_stop({})

    def _error(self, data):
        # The HTTP status was already 200; the error type is the only signal of what went wrong.
        error = data.get("error") or {}
        raised = _upstream_error(error.get("type"), error.get("message") or "Upstream stream error.",
                                 _ERRORS.get(error.get("type"), (500,))[0])
        raised.upstream_status = None  # common.UpstreamError: None for stream events
        raise raised

    _HANDLERS = {"message_start": _message_start, "content_block_start": _block_start,
                 "content_block_delta": _block_delta, "content_block_stop": _block_stop,
                 "message_delta": _message_delta, "message_stop": _message_stop, "error": _error}


# ---------------------------------------------------------------- errors
def error_from_anthropic(status, body, text, retry_after=None):
    """An Anthropic HTTP error (parsed JSON body, or None if it was not JSON, and the raw text)
    → UpstreamError carrying an OpenAI error object."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return _upstream_error(error.get("type"), error["message"], status, retry_after)
    snippet = (text or "").strip()[:200]
    message = f"Anthropic API returned HTTP {status}" + (f": {snippet}" if snippet else ".")
    return _upstream_error(None, message, status, retry_after)


def _upstream_error(kind, message, status, retry_after=None):
    kind = kind if kind in _ERRORS else _KIND_BY_STATUS.get(status)
    fallback = "invalid_request_error" if status < 500 else "server_error"
    _, type_, code = _ERRORS.get(kind, (status, fallback, None))
    param = None
    if any(phrase in message.lower() for phrase in _CONTEXT_LENGTH):
        code, param = "context_length_exceeded", "messages"
    return UpstreamError(_GATEWAY_STATUS.get(status, status), error_object(message, type_, param, code),
                         retry_after=retry_after, upstream_status=status)
