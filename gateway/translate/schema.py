"""JSON Schema as OpenAI requests carry it (tool `parameters`, `response_format.json_schema`) → the
OpenAPI-subset `Schema` Gemini takes (`responseSchema`, function declarations), as pure functions:
unknown fields dropped, `$ref` inlined, UPPERCASE types, `null` as `nullable`.
"""
from gateway.translate.common import UpstreamError, error_object


# The fields of Gemini's `Schema` (genai-py types.Schema). Everything else in an OpenAI JSON Schema —
# additionalProperties, strict, $schema, $id, $comment, const, oneOf, allOf, not, examples,
# patternProperties, dependencies, ... — makes the API answer 400 ("Unknown name ..."), so it is dropped.
# `$ref` into `$defs`/`definitions` is inlined (Gemini cannot follow references); a cycle is a 400.
SCHEMA_FIELDS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "items", "properties", "required",
    "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
    "minimum", "maximum", "anyOf", "propertyOrdering", "default", "example",
})
# The `format` values Gemini accepts, per type. Any other answers 400 "...properties[url].format: only 'enum' and
# 'date-time' are supported for STRING type" (verbatim in google-gemini/gemini-cli#3178 and #5450): pydantic
# writes "date", "uuid", "uri", "email" for date, UUID, HttpUrl, EmailStr fields.
FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}


def clean_schema(schema, _defs=None, _refs=()):
    """An OpenAI JSON Schema → Gemini's Schema: known fields only, UPPERCASE types, `null` as
    `nullable`, empty `properties` removed (Gemini rejects an OBJECT with empty properties)."""
    if not isinstance(schema, dict):
        return schema
    if _defs is None:
        _defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in _refs or name not in _defs:
            why = "is recursive" if name in _refs else "points to no $defs entry"
            raise UpstreamError(400, error_object(f"JSON schema $ref {schema['$ref']!r} {why}; Gemini "
                                                  "needs schemas without references."))
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return clean_schema({**_defs[name], **rest}, _defs, _refs + (name,))
    out = {}
    for key, value in schema.items():
        if key == "const" and isinstance(value, str) and "enum" not in schema:
            out["enum"] = [value]  # pydantic's Literal["x"]: Gemini has no const, a one-value enum says the same
            continue
        if key not in SCHEMA_FIELDS:
            continue
        if key == "type":
            _set_type(out, value)
        elif key == "properties":
            if not isinstance(value, dict):
                raise _bad_schema("'properties' must be an object")
            if value:
                out[key] = {name: clean_schema(sub, _defs, _refs) for name, sub in value.items()}
        elif key == "items":
            out[key] = clean_schema(value, _defs, _refs)
        elif key == "anyOf":
            if not isinstance(value, list):
                raise _bad_schema("'anyOf' must be an array")
            _set_any_of(out, [clean_schema(sub, _defs, _refs) for sub in value])
        else:
            out[key] = value
    return _gemini_limits(out)


# The element type an array without `items` is given: Gemini refuses such an array ("...properties[tags].items:
# missing field", verbatim in cline/cline#7339), JSON Schema allows it, and MCP tools often declare one. STRING, as
# other Gemini clients fill it in (e.g. zavora-ai/adk-rust#332, RightNow-AI/openfang#1010): a type Gemini surely
# takes, and what an untyped list in a tool's arguments most often holds.
DEFAULT_ITEMS = {"type": "STRING"}


def _gemini_limits(out):
    """What Gemini refuses in a schema that JSON Schema allows, made acceptable:
    * an unsupported `format`, and an enum of anything but strings ("Invalid value at '...enum[0]' (TYPE_STRING),
      1", verbatim in microsoft/azure-devops-mcp#145; pydantic's IntEnum and Literal[1, 2]), dropped (the type
      still holds the value). Gemini's enum is for STRING only, so a string enum without a type gets that type;
    * an object written without `type` (`properties` or `required` alone, as JSON Schema allows and MCP tools
      write): Gemini answers "...properties: only allowed for OBJECT type" (anomalyco/opencode#11888), so it is
      given type OBJECT; on any other type, `properties` and `required` are dropped for the same reason;
    * an array without `items`, given DEFAULT_ITEMS;
    * a `required` name with no property of that name ("required[0]: property is not defined"), dropped."""
    if "type" not in out and "anyOf" not in out and ("properties" in out or "required" in out):
        out["type"] = "OBJECT"
    elif out.get("type", "OBJECT") != "OBJECT":
        out.pop("properties", None)
        out.pop("required", None)
    if "required" in out:
        defined = out.get("properties") or {}
        required = [name for name in out["required"] if name in defined] if isinstance(out["required"], list) else []
        if required:
            out["required"] = required
        else:
            del out["required"]
    if out.get("type") == "ARRAY" and "items" not in out:
        out["items"] = dict(DEFAULT_ITEMS)
    if "format" in out and out["format"] not in FORMATS.get(out.get("type"), ()):
        del out["format"]
    if isinstance(out.get("enum"), list) and None in out["enum"]:  # Optional[Literal[...]] in one enum
        out["enum"] = [v for v in out["enum"] if v is not None]
        out["nullable"] = True
    if "enum" in out:
        if not isinstance(out["enum"], list) or not all(isinstance(v, str) for v in out["enum"]):
            del out["enum"]
        elif "type" not in out and "anyOf" not in out:
            out["type"] = "STRING"
    return out


def _bad_schema(message):
    return UpstreamError(400, error_object(f"Invalid JSON schema: {message}.", "invalid_request_error", None,
                                           "invalid_schema"))


def _set_type(out, type_):
    types = type_ if isinstance(type_, list) else [type_]
    if not all(isinstance(t, str) for t in types):
        raise _bad_schema(f"'type' must be a string or a list of strings, got {type_!r}")
    if "null" in types:
        out["nullable"] = True
    rest = [t.upper() for t in types if t != "null"]
    if len(rest) == 1:
        out["type"] = rest[0]
    elif rest:  # a branch is a whole schema of its own: an ARRAY one needs its items too
        out["anyOf"] = [{"type": t, "items": dict(DEFAULT_ITEMS)} if t == "ARRAY" else {"type": t} for t in rest]


def _set_any_of(out, branches):
    # Optional[X] arrives as anyOf [X, {"type": "null"}]; Gemini spells that X + nullable.
    rest = [b for b in branches if b != {"nullable": True}]
    if len(rest) < len(branches):
        out["nullable"] = True
    if len(rest) == 1:
        for key, value in rest[0].items():
            out.setdefault(key, value)
    elif rest:
        out["anyOf"] = rest
