"""OpenAI chat request → Gemini generateContent body. The conventions (tool results, thought signatures,
schemas) are in the package docstring."""
import json
from urllib.parse import urlsplit

from gateway.translate.common import (UpstreamError, error_object, refuse_legacy_functions, split_tool_call_id,
                                     text_of)
from gateway.translate.media import image_type
from gateway.translate.schema import clean_schema


def _bad_request(message, param):
    return UpstreamError(400, error_object(message, "invalid_request_error", param))


def _to(field, transform=lambda v: v):
    return lambda value: {field: transform(value)}


def _json_mode(response_format):
    return isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")


def _json_instruction(response_format):
    """The words that ask for JSON where the request cannot (beside function declarations)."""
    schema = (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") == "json_schema" and schema:
        return ("When you answer rather than call a function, answer with one JSON value only, no other text, "
                "valid against this JSON Schema: " + json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    return "When you answer rather than call a function, answer with one JSON object only, no other text."


def _response_format(response_format):
    if not _json_mode(response_format):
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
    (("response_format",), _response_format),
)
# Only for models whose table row has the capability "penalties" (gemini-2.0-flash): the others answer 400
# "Penalty is not enabled for models/gemini-2.5-flash" (vercel/ai#8943, PublicAffairs/openai-gemini#63), so the
# penalties are dropped for them, as for Claude, rather than fail a request OpenAI would serve.
PENALTIES = (
    (("presence_penalty",), _to("presencePenalty")),
    (("frequency_penalty",), _to("frequencyPenalty")),
)

# OpenAI tool_choice string → Gemini functionCallingConfig mode (other forms, e.g. allowed_tools, are dropped).
TOOL_CHOICE_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}

# Extension → MIME type for images given by URL (Gemini wants a mimeType with fileData).
MIME_BY_EXTENSION = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                     "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf"}
DEFAULT_IMAGE_MIME = "image/jpeg"


def to_gemini(request, default_max_tokens=None, capabilities=frozenset()):
    """An OpenAI chat request (already validated) → a generateContent body (the model goes in the URL).
    `capabilities`: the model's, from the model table (see PENALTIES)."""
    refuse_legacy_functions(request, "Gemini")
    system, contents = _contents(request["messages"])
    declarations = [_declaration(t["function"]) for t in request.get("tools") or []
                    if t.get("type", "function") == "function"]
    if declarations and _json_mode(request.get("response_format")):
        # Gemini 2.x refuses function declarations beside a JSON response type (400 "Function calling with a
        # response mime type: 'application/json' is unsupported", googleapis/python-genai#867), which an agent
        # with tools and a typed answer sends on every turn. The format goes in the instructions instead.
        system = system + [{"text": _json_instruction(request["response_format"])}]
        request = {k: v for k, v in request.items() if k != "response_format"}
    body = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = request.get("tool_choice")
        named = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        if named:  # a named function is forced with ANY + that one name
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [named]}}
        elif isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
            body["toolConfig"] = {"functionCallingConfig": {"mode": TOOL_CHOICE_MODES[choice]}}
    config = _generation_config(request, default_max_tokens, "penalties" in capabilities)
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(request, default_max_tokens, penalties=False):
    config = {}
    for fields, transform in GENERATION_CONFIG + (PENALTIES if penalties else ()):
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
    if mime_type.startswith("image/"):
        mime_type = image_type(mime_type, data)
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
