"""The chat request body, checked before anything is sent upstream (marshmallow, built once).

Fields the gateway does not know pass through untouched; `param` in an error names the bad field.
"""
from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from gateway.handlers.errors import ApiError

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_PART_TYPES = {"text", "image_url", "input_audio", "file", "refusal"}


class _Number(fields.Float):
    """A JSON number, not a numeric string or a boolean."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("must be a number")
        return super()._deserialize(value, attr, data, **kwargs)


class _Int(fields.Integer):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be an integer")
        return super()._deserialize(value, attr, data, **kwargs)


class _Bool(fields.Boolean):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be a boolean")
        return value


def _check_part(part, where):
    if not isinstance(part, dict):
        raise ValidationError({where: ["must be an object"]})
    kind = part.get("type")
    if kind not in _PART_TYPES:
        raise ValidationError({where + ".type": [f"unknown content part type {kind!r}"]})
    if kind == "text" and not isinstance(part.get("text"), str):
        raise ValidationError({where + ".text": ["must be a string"]})
    if kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict) or not isinstance(image.get("url"), str) or not image["url"]:
            raise ValidationError({where + ".image_url.url": ["must be a non-empty string"]})
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str) or \
                audio.get("format") not in ("wav", "mp3"):
            raise ValidationError({where + ".input_audio": ["must be {\"data\": base64, \"format\": \"wav\" | \"mp3\"}"]})
    if kind == "file":
        file = part.get("file")
        if not isinstance(file, dict):
            raise ValidationError({where + ".file": ["must be an object"]})
        for name in ("file_data", "file_id", "filename"):
            if file.get(name) is not None and not isinstance(file[name], str):
                raise ValidationError({f"{where}.file.{name}": ["must be a string"]})


def _check_tool_calls(calls, where):
    if not isinstance(calls, list):
        raise ValidationError({where: ["must be an array"]})
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise ValidationError({f"{where}[{j}]": ["must have an id and a function with a name"]})
        if not isinstance(fn.get("arguments", ""), str):
            raise ValidationError({f"{where}[{j}].function.arguments": ["must be a JSON string"]})


def _check_message(msg, i):
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise ValidationError({where: ["must be an object"]})
    role = msg.get("role")
    if role not in ROLES:
        raise ValidationError({where + ".role": [f"must be one of {', '.join(ROLES)}; got {role!r}"]})
    content = msg.get("content")
    if content is None:
        if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call")):
            pass
        elif role != "assistant":
            raise ValidationError({where + ".content": ["is required"]})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")
    elif not isinstance(content, str):
        raise ValidationError({where + ".content": ["must be a string or an array of content parts"]})
    if role == "assistant" and content is None and not msg.get("tool_calls") and not msg.get("function_call"):
        raise ValidationError({where + ".content": ["is required unless tool_calls is given"]})
    if msg.get("tool_calls") is not None:
        _check_tool_calls(msg["tool_calls"], where + ".tool_calls")
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise ValidationError({where + ".tool_call_id": ["is required for tool messages"]})


class _Messages(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError("must be an array")
        if not value:
            raise ValidationError("must contain at least one message")
        for i, msg in enumerate(value):
            _check_message(msg, i)
        return value


class _Stop(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
            return value
        raise ValidationError("must be a string or an array of at most 4 strings")


class _Tools(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError("must be an array")
        for i, tool in enumerate(value):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise ValidationError({i: ["must be {\"type\": \"function\", \"function\": {\"name\": ...}}"]})
            if "parameters" in fn and not isinstance(fn["parameters"], dict):
                raise ValidationError({i: ["function.parameters must be a JSON Schema object"]})
        return value


class _ToolChoice(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict) and isinstance(value.get("function"), dict) and \
                isinstance(value["function"].get("name"), str):
            return value
        if isinstance(value, dict) and value.get("type") == "allowed_tools":
            return value
        raise ValidationError("must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}")


class _ResponseFormat(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        kind = value.get("type") if isinstance(value, dict) else None
        if kind in ("text", "json_object"):
            return value
        spec = value.get("json_schema") if kind == "json_schema" else None
        if isinstance(spec, dict) and isinstance(spec.get("schema", {}), dict):
            return value
        raise ValidationError("must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}")


class ChatRequest(Schema):
    class Meta:
        unknown = INCLUDE

    model = fields.String(required=True, validate=validate.Length(min=1))
    messages = _Messages(required=True)
    temperature = _Number(allow_none=True, validate=validate.Range(0, 2))
    top_p = _Number(allow_none=True, validate=validate.Range(0, 1))
    n = _Int(allow_none=True, validate=validate.Range(1, 128))
    max_tokens = _Int(allow_none=True, validate=validate.Range(min=1))
    max_completion_tokens = _Int(allow_none=True, validate=validate.Range(min=1))
    presence_penalty = _Number(allow_none=True, validate=validate.Range(-2, 2))
    frequency_penalty = _Number(allow_none=True, validate=validate.Range(-2, 2))
    top_logprobs = _Int(allow_none=True, validate=validate.Range(0, 20))
    logprobs = _Bool(allow_none=True)
    seed = _Int(allow_none=True)
    stream = _Bool(allow_none=True)
    stream_options = fields.Dict(allow_none=True)
    stop = _Stop(allow_none=True)
    tools = _Tools(allow_none=True)
    tool_choice = _ToolChoice(allow_none=True)
    parallel_tool_calls = _Bool(allow_none=True)
    response_format = _ResponseFormat(allow_none=True)
    user = fields.String(allow_none=True)
    safety_identifier = fields.String(allow_none=True)
    logit_bias = fields.Dict(allow_none=True)

    @validates_schema
    def _stream_options_need_stream(self, data, **kwargs):
        if data.get("stream_options") is not None and not data.get("stream"):
            raise ValidationError("stream_options is only allowed when stream is true", "stream_options")


_SCHEMA = ChatRequest()
_DECLARED = tuple(_SCHEMA.fields)
_REQUIRED = frozenset(name for name, field in _SCHEMA.fields.items() if field.required)
_BY_FIELDS = {}  # frozenset of the declared fields a body has -> a schema of just those
_MAX_VARIANTS = 256


def _schema_for(body):
    """A schema of only the declared fields this body has (the required ones always): marshmallow visits
    every declared field on each load, and a typical body has 2 to 5 of the 23. Built once per set of
    fields, in declared order, so errors come in the same order; past _MAX_VARIANTS sets, the whole schema."""
    present = _REQUIRED.union(name for name in body if name in _SCHEMA.fields)
    schema = _BY_FIELDS.get(present)
    if schema is None:
        if len(_BY_FIELDS) >= _MAX_VARIANTS:
            return _SCHEMA
        schema = _BY_FIELDS[present] = ChatRequest(only=tuple(n for n in _DECLARED if n in present))
    return schema


def _first_error(messages, prefix=""):
    """(param, message) of the first error in marshmallow's nested error dict."""
    if isinstance(messages, dict):
        key = next(iter(messages))
        sub = messages[key]
        if isinstance(key, int):
            path = f"{prefix}[{key}]"
        elif prefix:
            path = key if key.startswith(prefix) else f"{prefix}.{key}"
        else:
            path = key
        return _first_error(sub, path)
    if isinstance(messages, list):
        first = messages[0]
        if isinstance(first, (dict, list)):
            return _first_error(first, prefix)
        return prefix, str(first)
    return prefix, str(messages)


def validate_chat(body):
    """The validated body (unknown fields kept as sent), or ApiError 400 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", param=None, code="invalid_body")
    try:
        _schema_for(body).load(body)
    except ValidationError as e:
        param, message = _first_error(e.messages)
        if param == "_schema":
            param = None
        raise ApiError(400, f"Invalid value for '{param}': {message}" if param else message,
                       param=param, code="invalid_value") from None
    return body
