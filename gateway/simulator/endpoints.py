"""The three providers' endpoints as small adapters: auth, validation, parsing and body builders.

`SimApp` drives every adapter through the same corridor (count, auth, validate, faults, reply),
so a provider differs only in what is written here.
"""
from urllib.parse import parse_qs

from . import errors, formats, validate
from .conversation import Reply, anthropic_ask, gemini_ask, openai_ask

SSE = "text/event-stream; charset=utf-8"


class Route:
    """What the URL says: the Gemini model and method live in the path, not the body."""
    __slots__ = ("model", "stream", "sse")

    def __init__(self, model=None, stream=False, sse=False):
        self.model, self.stream, self.sse = model, stream, sse


class OpenAIEndpoint:
    name = "openai"
    check = staticmethod(validate.check_openai)

    @staticmethod
    def bad_json():
        return errors.openai_error(400, errors.OPENAI_BAD_JSON)

    @staticmethod
    def bad_request(message):
        return errors.openai_error(400, message)

    @staticmethod
    def model(body, route):
        model = body.get("model")
        return model if isinstance(model, str) else ""

    @staticmethod
    def auth(environ):
        token = environ.get("HTTP_AUTHORIZATION", "")
        if token[:7].lower() == "bearer " and token[7:].strip():
            return None
        return errors.openai_error(401, errors.OPENAI_NO_KEY)

    @staticmethod
    def ask(body, route):
        return openai_ask(body)

    @staticmethod
    def content_policy(ids, ask):
        return errors.content_policy_openai(), None

    @staticmethod
    def body(ids, ask, reply):
        return ([("Content-Type", errors.JSON), ("x-request-id", ids.request), ("openai-processing-ms", "1")],
                formats.openai_body(ids.openai, ids.created, ask, reply, ids.call))

    @staticmethod
    def stream(ids, ask, reply, route):
        return ([("Content-Type", SSE), ("x-request-id", ids.request), ("openai-processing-ms", "1")],
                formats.openai_stream(ids.openai, ids.created, ask, reply, ids.call))


class AnthropicEndpoint:
    name = "anthropic"
    check = staticmethod(validate.check_anthropic)

    @staticmethod
    def bad_json():
        return errors.anthropic_error(400, "invalid_request_error", "There was an error parsing the body of your "
                                      "request. Please make sure it is valid JSON.")

    @staticmethod
    def bad_request(message):
        return errors.anthropic_error(400, "invalid_request_error", message)

    model = staticmethod(OpenAIEndpoint.model)

    @staticmethod
    def auth(environ):
        token = environ.get("HTTP_AUTHORIZATION", "")
        if not environ.get("HTTP_X_API_KEY", "").strip() and not (token[:7].lower() == "bearer " and token[7:].strip()):
            return errors.anthropic_error(401, "authentication_error", "x-api-key header is required")
        if not environ.get("HTTP_ANTHROPIC_VERSION"):
            return errors.anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    @staticmethod
    def ask(body, route):
        return anthropic_ask(body)

    @staticmethod
    def content_policy(ids, ask):
        reply = Reply()
        reply.finish = "refusal"
        return None, reply

    @staticmethod
    def body(ids, ask, reply):
        return ([("Content-Type", errors.JSON), ("request-id", ids.request)],
                formats.anthropic_body(ids.anthropic, ask, reply, ids.tool))

    @staticmethod
    def stream(ids, ask, reply, route):
        return ([("Content-Type", SSE), ("Cache-Control", "no-cache"), ("request-id", ids.request)],
                formats.anthropic_stream(ids.anthropic, ask, reply, ids.tool))


class GeminiEndpoint:
    name = "gemini"
    check = staticmethod(validate.check_gemini)

    @staticmethod
    def route(path, colon, action, query):
        start = path.rfind("/models/") + len("/models/")
        return Route(path[start:colon], action == "streamGenerateContent", "alt=sse" in query)

    @staticmethod
    def bad_json():
        return errors.gemini_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token.")

    @staticmethod
    def bad_request(message):
        return errors.gemini_error(400, "INVALID_ARGUMENT", message)

    @staticmethod
    def model(body, route):
        return route.model

    @staticmethod
    def auth(environ):
        if environ.get("HTTP_X_GOOG_API_KEY", "").strip():
            return None
        query = environ.get("QUERY_STRING", "")
        if "key=" in query and (parse_qs(query).get("key") or [""])[0].strip():
            return None
        return errors.gemini_error(403, "PERMISSION_DENIED", errors.GEMINI_NO_KEY)

    @staticmethod
    def ask(body, route):
        return gemini_ask(body, route.model, route.stream)

    @staticmethod
    def content_policy(ids, ask):
        reply = Reply()
        reply.finish = "blocked"
        return None, reply

    @staticmethod
    def body(ids, ask, reply):
        if reply.finish == "blocked":
            payload = errors.gjson(formats.gemini_blocked(ids.gemini, ask))
        else:
            payload = formats.gemini_body(ids.gemini, ask, reply)
        return [("Content-Type", errors.GEMINI_JSON)], payload

    @staticmethod
    def stream(ids, ask, reply, route):
        if reply.finish == "blocked":
            payloads = [errors.gjson(formats.gemini_blocked(ids.gemini, ask))]
        else:
            payloads = formats.gemini_events(ids.gemini, ask, reply)
        ctype = "text/event-stream" if route.sse else errors.GEMINI_JSON
        return [("Content-Type", ctype)], formats.gemini_stream(payloads, route.sse)


OPENAI, ANTHROPIC, GEMINI = OpenAIEndpoint(), AnthropicEndpoint(), GeminiEndpoint()

MODEL_LISTS = {
    "openai": {"object": "list", "data": [
        {"id": m, "object": "model", "created": 1686935002, "owned_by": "system"}
        for m in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4-turbo",
                  "gpt-3.5-turbo")]},
    "anthropic": {"data": [
        {"type": "model", "id": i, "display_name": n, "created_at": c}
        for i, n, c in (("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
                        ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
                        ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"))],
        "has_more": False, "first_id": "claude-opus-4-5-20251101", "last_id": "claude-haiku-4-5-20251001"},
    "gemini": {"models": [
        {"name": f"models/{m}", "version": v, "displayName": d, "description": d,
         "inputTokenLimit": 1048576, "outputTokenLimit": out,
         "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent",
                                        "batchGenerateContent"],
         "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2}
        for m, v, d, out in (("gemini-2.5-pro", "2.5", "Gemini 2.5 Pro", 65536),
                             ("gemini-2.5-flash", "001", "Gemini 2.5 Flash", 65536),
                             ("gemini-2.0-flash", "2.0", "Gemini 2.0 Flash", 8192))]},
}
