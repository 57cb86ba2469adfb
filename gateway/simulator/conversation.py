"""What a request asks for, and the deterministic reply it gets.

Each provider's request is reduced to an `Ask` (texts, limits, the tool to call, a prefill); the
reply is derived from a hash of the conversation's texts minus a trailing assistant prefill, so
a continuation request (prefill = a prefix of the reply) completes the very same text. Parameters
(model, max tokens, stop sequences) are not hashed, so they never change the canonical words.
"""
import hashlib
import re

import orjson

VOCAB = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "amber", "basil", "cedar", "dune", "ember", "fern",
    "garnet", "harbor", "iris", "jade", "kelp", "lotus", "maple", "nectar",
    "opal", "pine", "quartz", "reed", "sage", "thyme", "umber", "violet",
    "willow", "yarrow", "zephyr", "acorn", "birch", "clover", "daisy", "elm",
    "flint", "grove", "heron", "ivory", "juniper", "kestrel", "linden", "meadow",
)
_PIECE = re.compile(r"\s*\S+|\s+")  # a token = leading whitespace + a word (or trailing whitespace)
_MASK = (1 << 64) - 1


class Ask:
    __slots__ = ("model", "stream", "include_usage", "texts", "prompt_tokens", "max_tokens", "stops",
                 "tool", "json", "prefill", "last_is_assistant")

    def __init__(self, model):
        self.model = model
        self.stream = False
        self.include_usage = False
        self.texts = []          # hashed: system, user and assistant texts (not tool results)
        self.prompt_tokens = 0
        self.max_tokens = None
        self.stops = ()
        self.tool = None         # (name, json schema) when the reply is a tool call
        self.json = None         # the schema ({} = any object) when JSON mode asks for a JSON answer
        self.prefill = None      # trailing assistant text the reply continues
        self.last_is_assistant = False


class Reply:
    __slots__ = ("text", "pieces", "finish", "stop_sequence", "tool_name", "tool_args", "tool_json",
                 "output_tokens")

    def __init__(self):
        self.text = ""
        self.pieces = []
        self.finish = "end"          # end | stop_sequence | length | tool
        self.stop_sequence = None
        self.tool_name = None
        self.tool_args = None
        self.tool_json = None
        self.output_tokens = 1


def _words(text):
    return len(text.split())


def _add_text(ask, text):
    if text:
        ask.texts.append(text)
        ask.prompt_tokens += _words(text)


def _tokens_of(obj):
    if isinstance(obj, str):
        return _words(obj)
    return len(orjson.dumps(obj)) // 4


def _stops(value):
    if isinstance(value, str):
        return (value,)
    return tuple(s for s in value or () if isinstance(s, str) and s)


def _finish_ask(ask, prefill_text):
    if ask.last_is_assistant and prefill_text:
        ask.prefill = prefill_text
        ask.texts.pop()  # the prefill is not part of the conversation's identity
    ask.prompt_tokens = max(1, ask.prompt_tokens)
    return ask


# ---------------------------------------------------------------- OpenAI

def _oa_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def openai_ask(body):
    ask = Ask(body.get("model") or "")
    ask.stream = bool(body.get("stream"))
    ask.include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if ask.stream else False
    messages = body.get("messages") or []
    prefill = None
    for m in messages:
        role = m.get("role")
        text = _oa_text(m.get("content"))
        if role == "tool":
            ask.prompt_tokens += _words(text)
            continue
        _add_text(ask, text)
        for call in m.get("tool_calls") or ():
            ask.prompt_tokens += _tokens_of((call.get("function") or {}).get("arguments") or "")
        prefill = text if (role == "assistant" and not m.get("tool_calls")) else None
    last_role = messages[-1].get("role") if messages else None
    ask.last_is_assistant = last_role == "assistant"
    ask.max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    ask.stops = _stops(body.get("stop"))
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        ask.json = {}
    elif response_format.get("type") == "json_schema":
        ask.json = (response_format.get("json_schema") or {}).get("schema") or {}
    tools = [t.get("function") or {} for t in body.get("tools") or () if t.get("type", "function") == "function"]
    choice = body.get("tool_choice", "auto")
    if tools and choice != "none" and last_role not in ("tool", "assistant"):
        name = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        ask.tool = _pick(tools, name, "name", "parameters")
    return _finish_ask(ask, prefill)


def _pick(tools, name, name_key, schema_key):
    chosen = tools[0]
    if name:
        chosen = next((t for t in tools if t.get(name_key) == name), {name_key: name})
    return chosen.get(name_key) or "tool", chosen.get(schema_key) or {}


# ---------------------------------------------------------------- Anthropic

def _ant_blocks(content):
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or () if isinstance(b, dict)]


def anthropic_ask(body):
    ask = Ask(body.get("model") or "")
    ask.stream = bool(body.get("stream"))
    for block in _ant_blocks(body.get("system")):
        _add_text(ask, block.get("text", ""))
    messages = body.get("messages") or []
    prefill = None
    last_has_result = False
    for m in messages:
        text, has_tool_use, last_has_result = "", False, False
        for block in _ant_blocks(m.get("content")):
            kind = block.get("type")
            if kind == "text":
                text += block.get("text", "")
            elif kind == "tool_result":
                last_has_result = True
                ask.prompt_tokens += _tokens_of(block.get("content") or "")
            elif kind == "tool_use":
                has_tool_use = True
                ask.prompt_tokens += _tokens_of(block.get("input") or {})
        _add_text(ask, text)
        prefill = text if (m.get("role") == "assistant" and not has_tool_use) else None
    ask.last_is_assistant = bool(messages) and messages[-1].get("role") == "assistant"
    ask.max_tokens = body.get("max_tokens")
    ask.stops = _stops(body.get("stop_sequences"))
    tools = [t for t in body.get("tools") or () if "input_schema" in t or "type" not in t]
    choice = body.get("tool_choice") or {"type": "auto"}
    if tools and choice.get("type") != "none" and not last_has_result and not ask.last_is_assistant:
        ask.tool = _pick(tools, choice.get("name") if choice.get("type") == "tool" else None, "name", "input_schema")
    return _finish_ask(ask, prefill)


# ---------------------------------------------------------------- Gemini

def g(d, camel, snake):
    """Google accepts both lowerCamelCase and proto snake_case field names."""
    v = d.get(camel)
    return d.get(snake) if v is None else v


def gemini_ask(body, model, stream):
    ask = Ask(model)
    ask.stream = stream
    for part in (g(body, "systemInstruction", "system_instruction") or {}).get("parts") or ():
        _add_text(ask, part.get("text", ""))
    contents = body.get("contents") or []
    prefill = None
    last_has_response = False
    for c in contents:
        text, has_call, last_has_response = "", False, False
        for part in c.get("parts") or ():
            if "text" in part and not part.get("thought"):
                text += part.get("text") or ""
            elif g(part, "functionCall", "function_call") is not None:
                has_call = True
                ask.prompt_tokens += _tokens_of(g(part, "functionCall", "function_call"))
            elif g(part, "functionResponse", "function_response") is not None:
                last_has_response = True
                ask.prompt_tokens += _tokens_of(g(part, "functionResponse", "function_response"))
        _add_text(ask, text)
        prefill = text if (c.get("role") == "model" and not has_call) else None
    ask.last_is_assistant = bool(contents) and contents[-1].get("role") == "model"
    config = g(body, "generationConfig", "generation_config") or {}
    ask.max_tokens = g(config, "maxOutputTokens", "max_output_tokens")
    ask.stops = _stops(g(config, "stopSequences", "stop_sequences"))
    if g(config, "responseMimeType", "response_mime_type") == "application/json":
        ask.json = (g(config, "responseSchema", "response_schema")
                    or g(config, "responseJsonSchema", "response_json_schema") or {})
    decls = []
    for tool in body.get("tools") or ():
        decls.extend(g(tool, "functionDeclarations", "function_declarations") or ())
    fcc = g(g(body, "toolConfig", "tool_config") or {}, "functionCallingConfig", "function_calling_config") or {}
    if (decls and str(fcc.get("mode", "AUTO")).upper() != "NONE" and not last_has_response
            and not ask.last_is_assistant):
        allowed = g(fcc, "allowedFunctionNames", "allowed_function_names") or ()
        name, schema = _pick(decls, allowed[0] if allowed else None, "name", "parameters")
        if not schema:
            schema = g(next((d for d in decls if d.get("name") == name), {}),
                       "parametersJsonSchema", "parameters_json_schema") or {}
        ask.tool = (name, schema)
    return _finish_ask(ask, prefill)


# ---------------------------------------------------------------- the reply

def example(schema, depth=0):
    """A value matching a JSON (or Gemini OpenAPI-subset) schema: strings "example", numbers 1, ..."""
    if not isinstance(schema, dict) or depth > 8:
        return "example"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf", "any_of"):
        options = [o for o in schema.get(key) or () if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return example(options[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind or ("object" if "properties" in schema else "string")).lower()
    if kind == "object":
        return {k: example(v, depth + 1) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items") or {}, depth + 1)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


_canonical_cache = {}


def canonical_text(texts, n, seed=0):
    """`n` words determined by the conversation's texts (and the simulator's seed)."""
    h = hashlib.blake2b(digest_size=8)
    for t in texts:
        h.update(t.encode())
        h.update(b"\x1e")
    key = (h.digest(), n, seed)
    hit = _canonical_cache.get(key)
    if hit is not None:
        return hit
    x = int.from_bytes(key[0], "little") ^ (seed * 0x9E3779B97F4A7C15 & _MASK)
    words = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & _MASK
        words.append(VOCAB[x >> 58])
    if len(_canonical_cache) > 4096:  # benchmarks repeat a handful of prompts; tests use few
        _canonical_cache.clear()
    text = _canonical_cache[key] = " ".join(words)
    return text


def make_reply(ask, n_words, seed=0):
    reply = Reply()
    if ask.tool is not None:
        name, schema = ask.tool
        args = example(schema)
        reply.tool_name, reply.tool_args = name, args if isinstance(args, dict) else {}
        reply.tool_json = orjson.dumps(reply.tool_args).decode()
        reply.finish = "tool"
        reply.output_tokens = 8 + len(reply.tool_json) // 4
        return reply
    text = canonical_text(ask.texts, n_words, seed)
    if ask.json is not None:  # JSON mode: the schema's example, or the words as one JSON object
        value = example(ask.json) if ask.json else None
        text = orjson.dumps(value if isinstance(value, dict) else {"answer": text}).decode()
    if ask.prefill is not None and text.startswith(ask.prefill):
        text = text[len(ask.prefill):]
    if ask.stops:
        best = None
        for stop in ask.stops:
            i = text.find(stop)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, stop)
        if best is not None:
            text = text[:best[0]]
            reply.finish, reply.stop_sequence = "stop_sequence", best[1]
    pieces = _PIECE.findall(text)
    limit = ask.max_tokens
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(pieces):
        pieces = pieces[:limit]
        text = "".join(pieces)
        reply.finish, reply.stop_sequence = "length", None
    reply.text, reply.pieces = text, pieces
    reply.output_tokens = max(1, len(pieces))
    return reply
