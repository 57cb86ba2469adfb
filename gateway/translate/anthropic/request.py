"""OpenAI chat request → Anthropic /v1/messages body. The choices made here (system text, JSON mode as a
forced tool, temperature and top_p) are explained in the package docstring."""
import json
import re

from gateway.translate.common import (UpstreamError, error_object, id_digest, refuse_legacy_functions,
                                     split_tool_call_id, text_of)
from gateway.translate.media import image_type

JSON_TOOL = "json_tool_call"
_FORCE_JSON = {"type": "tool", "name": JSON_TOOL}

_TOOL_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


# Anthropic answers 400 "messages.N.content.M.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
# (verbatim in tailcallhq/forgecode#1142, BlockRunAI/ClawRouter#17); ids from other gateways or MCP
# clients may hold dots, colons, pipes.
_NOT_IN_TOOL_USE_ID = re.compile(r"[^a-zA-Z0-9_-]")


def _bad_request(message, param):
    return UpstreamError(400, error_object(message, param=param))


def to_anthropic(request, model, default_max_tokens):
    """An OpenAI chat request body (already validated) → an Anthropic /v1/messages body."""
    refuse_legacy_functions(request, "Claude")
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
    if "temperature" in body:  # why: see the package docstring
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
    "temperature": ("temperature", lambda t: min(t, 1.0)),  # why: see the package docstring
    "top_p": ("top_p", lambda p: p),
    "stop": ("stop_sequences", _stop_sequences),
    "user": ("metadata", lambda u: {"user_id": _user_id(u)}),
    "safety_identifier": ("metadata", lambda u: {"user_id": _user_id(u)}),  # OpenAI's successor to `user`
}


_OPAQUE_USER_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_DIGITS = re.compile(r"[0-9]{7,}")


def _user_id(user):
    """An id Anthropic takes for OpenAI's `user`. Apps often pass an e-mail address there, and Anthropic answers
    400 "metadata.user_id: user_id appears to contain an email address. Please send a uuid or hash value"
    (verbatim in BerriAI/litellm#10106; it asks for an opaque id: no names, e-mails or phone numbers). So
    anything but an opaque token, or digits alone (a phone number?), is sent as its SHA-256: still one stable
    id per end user, for Anthropic's abuse tracking, and nothing personal."""
    if _OPAQUE_USER_ID.fullmatch(user) and not _DIGITS.fullmatch(user):
        return user
    return id_digest(user, 64)


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
        if kind == "image":
            media_type = image_type(media_type, data)
        return [{"type": kind, "source": {"type": "base64", "media_type": media_type, "data": data}}]
    if url.startswith(("http://", "https://")):
        return [{"type": "image", "source": {"type": "url", "url": url}}]
    raise _bad_request("Image URLs must be http(s) URLs or base64 data URLs.", param)


def _file(part, param):
    """OpenAI's `file` part (how the SDK sends a PDF) → a document block; an uploaded file id cannot be sent."""
    data = (part.get("file") or {}).get("file_data") or ""
    media_type = data[len("data:"):].partition(";")[0]
    if not data.startswith("data:") or not (media_type == "application/pdf" or media_type.startswith("image/")):
        raise _bad_request("Only PDF or image files given as base64 data URLs in file.file_data are supported "
                           "by this model.", param)
    return _media(data, param)


_PARTS = {  # OpenAI user content part type → Anthropic blocks; other types (audio) are refused
    "text": lambda part, param: _text(part.get("text") or ""),
    "image_url": lambda part, param: _media(part["image_url"]["url"], param),
    "file": _file,
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

