"""Request validation as strict as the real APIs where a translator most often slips.

Each `check_*` returns None or the provider's 400 `(status_line, headers, body)`; messages are the
real APIs' wording where the wire-format reference records it.
"""
import json
import re

from .conversation import g
from .errors import anthropic_error, gemini_error, openai_error

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
OPENAI_MAX_TOOL_CALL_ID = 40


def _oa(message, param=None, code=None):
    return openai_error(400, message, "invalid_request_error", param, code)


def _too_long(value, param):
    """The schema's maxLength error; the API checks the schema before the order of tool messages."""
    if isinstance(value, str) and len(value) > OPENAI_MAX_TOOL_CALL_ID:
        return _oa(f"Invalid '{param}': string too long. Expected a string with maximum length "
                   f"{OPENAI_MAX_TOOL_CALL_ID}, but got a string with length {len(value)} instead.", param,
                   "string_above_max_length")
    return None


def _check_tool_call_ids(messages):
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        for k, call in enumerate(m.get("tool_calls") or ()):
            err = isinstance(call, dict) and _too_long(call.get("id"), f"messages[{i}].tool_calls[{k}].id")
            if err:
                return err
        err = _too_long(m.get("tool_call_id"), f"messages[{i}].tool_call_id")
        if err:
            return err
    return None


def check_openai(body):
    if not body.get("model"):
        return _oa("you must provide a model parameter")
    messages = body.get("messages")
    if messages is None:
        return _oa("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        return _oa(f"{messages!r} is too short - 'messages'", "messages")
    err = _check_tool_call_ids(messages)
    if err:
        return err
    pending, owner = {}, None  # tool_call ids still waiting for a tool message, and the assistant's index
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in OPENAI_ROLES:
            return _oa(f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                       "'tool', and 'developer'.", f"messages.[{i}].role", "invalid_value")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                return _oa("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                           "message with 'tool_calls'.", f"messages.[{i}].role")
            del pending[m["tool_call_id"]]
            continue
        if pending:
            break
        pending = {c.get("id"): True for c in m.get("tool_calls") or ()} if role == "assistant" else {}
        owner = i
    if pending:
        return _oa("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                   "'tool_call_id'. The following tool_call_ids did not have response messages: "
                   + ", ".join(pending), f"messages.[{owner}].role")
    return None


def _an(message):
    return anthropic_error(400, "invalid_request_error", message)


def _turns(messages):
    """Consecutive same-role messages form one turn, as the API merges them."""
    turns = []
    for i, m in enumerate(messages):
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        items = [(i, j, b) for j, b in enumerate(blocks) if isinstance(b, dict)]
        if turns and turns[-1][0] == m.get("role"):
            turns[-1][1].extend(items)
        else:
            turns.append((m.get("role"), items))
    return turns


# claude-<family>-<major>[-<minor>][-<date>]; the older claude-3-5-sonnet-… order never matches.
_CLAUDE_VERSION = re.compile(r"claude-[a-z]+-(\d+)(?:-(\d{1,2}))?(?!\d)")


def _one_sampler_only(model):
    """Claude 4.5 and later take `temperature` or `top_p`, not both. The simulator answers any model name,
    so the rule goes by the name's version rather than by a list of served models."""
    m = _CLAUDE_VERSION.match(model) if isinstance(model, str) else None
    return bool(m) and (int(m[1]), int(m[2] or 0)) >= (4, 5)


_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_TOOL_ID_FIELD = {"tool_use": "id", "tool_result": "tool_use_id"}


def _check_tool_ids(messages):
    """The schema's pattern on tool ids, checked before the pairing of tool_use and tool_result."""
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        for j, b in enumerate(content if isinstance(content, list) else ()):
            field = _TOOL_ID_FIELD.get(b.get("type")) if isinstance(b, dict) else None
            value = b.get(field) if field else None
            if isinstance(value, str) and not _TOOL_ID.fullmatch(value):
                return _an(f"messages.{i}.content.{j}.{b['type']}.{field}: String should match pattern "
                           "'^[a-zA-Z0-9_-]+$'")
    return None


def check_anthropic(body):
    for field in ("model", "messages", "max_tokens"):
        if body.get(field) is None:
            return _an(f"{field}: Field required")
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not 0 <= temperature <= 1:
        return _an("temperature: Input should be less than or equal to 1" if temperature > 1
                   else "temperature: Input should be greater than or equal to 0")
    user_id = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if isinstance(user_id, str) and "@" in user_id:  # verbatim in BerriAI/litellm#10106
        return _an("metadata.user_id: user_id appears to contain an email address. Please send a uuid or hash "
                   "value instead.")
    if temperature is not None and body.get("top_p") is not None and _one_sampler_only(body["model"]):
        return _an("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
    for t, tool in enumerate(body.get("tools") or ()):
        schema = tool.get("input_schema")
        if tool.get("type", "custom") == "custom" and (not isinstance(schema, dict) or schema.get("type") != "object"):
            return _an(f"tools.{t}.custom.input_schema.type: Input should be 'object'")
    messages = body["messages"]
    if isinstance(messages, list) and not messages:
        return _an("messages: at least one message is required")
    err = _check_tool_ids(messages)
    if err:
        return err
    last = len(messages) - 1
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return _an(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        if not content and not (i == last and m["role"] == "assistant"):
            return _an(f"messages.{i}: all messages must have non-empty content except for the optional final "
                       "assistant message")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for b in blocks:
            if isinstance(b, dict) and b.get("type") == "text":
                text = b.get("text") or ""
                if not text and not isinstance(content, str):
                    return _an("messages: text content blocks must be non-empty")
                if text and not text.strip():
                    return _an("messages: text content blocks must contain non-whitespace text")
    if messages and messages[-1].get("role") == "assistant":
        content = messages[-1].get("content")
        texts = [content] if isinstance(content, str) else [b.get("text") or "" for b in content or ()
                                                           if isinstance(b, dict) and b.get("type") == "text"]
        if texts and texts[-1] and texts[-1] != texts[-1].rstrip():
            return _an("messages: final assistant content cannot end with trailing whitespace")
    turns = _turns(messages)
    for k, (role, items) in enumerate(turns):
        if role == "user":
            uses = set()
            if k > 0 and turns[k - 1][0] == "assistant":
                uses = {b.get("id") for _, _, b in turns[k - 1][1] if b.get("type") == "tool_use"}
            for i, j, b in items:
                if b.get("type") == "tool_result" and b.get("tool_use_id") not in uses:
                    return _an(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                               f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                               "`tool_use` block in the previous message.")
        elif k + 1 < len(turns):
            uses = [(i, b.get("id")) for i, _, b in items if b.get("type") == "tool_use"]
            results = {b.get("tool_use_id") for _, _, b in turns[k + 1][1] if b.get("type") == "tool_result"}
            missing = [u for _, u in uses if u not in results]
            if missing:
                return _an(f"messages.{uses[0][0]}: `tool_use` ids were found without `tool_result` blocks "
                           f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                           "corresponding `tool_result` block in the next message.")
    return None


def _ge(message, field=None):
    details = None
    if field:
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field, "description": message}]}]
    return gemini_error(400, "INVALID_ARGUMENT", message, details)


_UNSUPPORTED_SCHEMA_KEYS = ("additionalProperties", "$schema", "strict", "$ref", "$defs")
# Formats Gemini accepts per type; others are a 400 (verbatim in google-gemini/gemini-cli#3178).
_SCHEMA_FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}


def _check_schema(schema, where, empty_objects=False):
    if not isinstance(schema, dict):
        return None
    for key in _UNSUPPORTED_SCHEMA_KEYS:
        if key in schema:
            return _ge(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.')
    kind = str(schema.get("type", "")).upper()
    if "format" in schema and schema["format"] not in _SCHEMA_FORMATS.get(kind, ()):
        if kind == "STRING":
            return _ge(f"* GenerateContentRequest.{where}.format: only 'enum' and 'date-time' are supported for "
                       "STRING type\n")
        return _ge(f"* GenerateContentRequest.{where}.format: unsupported format for {kind or 'TYPE_UNSPECIFIED'} "
                   "type\n")
    for k, value in enumerate(schema.get("enum") or ()):
        if not isinstance(value, str):  # verbatim shape in microsoft/azure-devops-mcp#145
            return _ge(f"Invalid value at '{where}.enum[{k}]' (TYPE_STRING), {json.dumps(value)}",
                       f"{where}.enum[{k}]")
    if kind == "OBJECT":
        props = schema.get("properties")
        if not props and not empty_objects:
            return _ge(f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type\n")
        for name, sub in (props or {}).items():
            err = _check_schema(sub, f"{where}.properties[{name}].value", empty_objects)
            if err:
                return err
    if isinstance(schema.get("items"), dict):
        return _check_schema(schema["items"], f"{where}.items", empty_objects)
    return None


def check_gemini(body):
    contents = body.get("contents")
    if not contents:
        return _ge("* GenerateContentRequest.contents: contents is not specified\n")
    for i, c in enumerate(contents):
        role = c.get("role", "user")
        if role not in ("user", "model", "function", "tool"):  # the last two are tolerated by the live API
            return _ge("Please use a valid role: user, model.")
        for j, part in enumerate(c.get("parts") or ()):
            fr = g(part, "functionResponse", "function_response")
            if fr is None:
                continue
            where = f"contents[{i}].parts[{j}].function_response"
            if not fr.get("name"):
                return _ge(f"* GenerateContentRequest.{where}.name: Name cannot be empty.\n")
            response = fr.get("response")
            if not isinstance(response, dict):
                value = '"%s"' % response if isinstance(response, str) else str(response)
                return _ge(f"Invalid value at '{where}.response' (type.googleapis.com/google.protobuf.Struct), "
                           f"{value}", f"{where}.response")
    config = g(body, "generationConfig", "generation_config") or {}
    schema = g(config, "responseSchema", "response_schema")
    if schema is not None:
        # The empty-OBJECT rule is recorded for function parameters only (reference C.2): not assumed here.
        err = _check_schema(schema, "generation_config.response_schema", empty_objects=True)
        if err:
            return err
    for t, tool in enumerate(body.get("tools") or ()):
        for d, decl in enumerate(g(tool, "functionDeclarations", "function_declarations") or ()):
            if "parameters" in decl:
                err = _check_schema(decl["parameters"], f"tools[{t}].function_declarations[{d}].parameters")
                if err:
                    return err
    return None
