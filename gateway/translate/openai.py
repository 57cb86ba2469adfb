"""OpenAI (and OpenAI-compatible servers): the request passes through but for tool-call ids OpenAI would
refuse; the stream is watched, not rewritten."""
import copy

from gateway.translate.common import UpstreamError, error_object, id_digest, split_tool_call_id

_STATUS_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 409: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_exceeded"}

# OpenAI answers 400 "Invalid 'messages[N].tool_calls[0].id': string too long. Expected a string with maximum
# length 40" for longer ids, which other providers' history can carry (Gemini's signed ids, other gateways').
MAX_TOOL_CALL_ID = 40


def to_openai(request, upstream_model, stream):
    """The client's body with our model id and tool-call ids OpenAI accepts; streams always ask for usage
    so every stream is priced."""
    body = dict(request)
    body["model"] = upstream_model
    body["messages"] = [_with_openai_ids(message) for message in request["messages"]]
    if stream:
        body["stream"] = True
        body["stream_options"] = {**(request.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)
    return body


def tool_call_id(call_id):
    """An id OpenAI accepts for one from any history. The Gemini thought signature the gateway appends
    means nothing to OpenAI and is cut off (`split_tool_call_id`); an id still over the limit becomes a
    prefix of itself plus a hash of the whole, so the assistant's call and the tool message answering it
    still carry the same id, and two long ids sharing a prefix stay apart."""
    bare = split_tool_call_id(call_id)[0]
    if len(bare) <= MAX_TOOL_CALL_ID:
        return bare
    digest = id_digest(bare)
    return bare[:MAX_TOOL_CALL_ID - len(digest) - 1] + "_" + digest


def _with_openai_ids(message):
    """The message with its tool-call ids (assistant `tool_calls[].id`, tool `tool_call_id`) made acceptable;
    the client's message itself is left as it was (the same request may be translated again on failover)."""
    if message.get("tool_calls"):
        message = {**message, "tool_calls": [{**call, "id": tool_call_id(call["id"])}
                                             for call in message["tool_calls"]]}
    if isinstance(message.get("tool_call_id"), str):
        message = {**message, "tool_call_id": tool_call_id(message["tool_call_id"])}
    return message


def from_openai(body, model, id_, created):
    """A non-streaming answer is already in shape; only sanity-check it."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise UpstreamError(502, error_object("The upstream returned a response without choices.",
                                              "upstream_error", None, "bad_upstream_response"))
    if not all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in body["choices"]) or \
            body.get("usage") is not None and not isinstance(body["usage"], dict):
        raise UpstreamError(502, error_object("The upstream returned choices or usage of the wrong shape.",
                                              "upstream_error", None, "bad_upstream_response"))
    return body


class OpenAIStream:
    """Relays chunks as they are; remembers the finish reason and holds back the usage chunk."""

    def __init__(self, model, id_, created):
        self.model = model
        self._started, self._finished = set(), {}   # choice index -> finish reason
        self.usage = None
        self._usage_chunk = None
        self.done = False

    def feed(self, data):
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
            raise UpstreamError(502, error_object(err.get("message") or "The upstream stream failed.",
                                                  err.get("type") or "server_error", err.get("param"),
                                                  err.get("code")))
        choices = data.get("choices")
        if data.get("usage") and not choices:
            self.usage = data["usage"]
            self._usage_chunk = data
            return []
        if choices:
            for choice in choices:
                if not isinstance(choice.get("delta", {}), dict):
                    raise ValueError("a choice's delta is not an object")  # a malformed event (transport.py)
                index = choice.get("index", 0)
                self._started.add(index)
                if choice.get("finish_reason"):
                    self._finished[index] = choice["finish_reason"]
        if data.get("usage"):
            self.usage = data["usage"]
        if "usage" in data:
            # Intermediate chunks carry `usage: null` only when the client asked for usage; we asked for it.
            # `data` is this event's own freshly parsed dict: dropping the key in place costs no copy per event.
            del data["usage"]
        return [data]

    @property
    def finish_reason(self):
        """Choice 0's finish reason once every choice that started has finished (n > 1 included); None
        while any is still open, so a stream cut between choices is not taken for a whole answer."""
        if not self._started or not self._started <= self._finished.keys():
            return None
        return self._finished.get(0) or next(iter(self._finished.values()))

    def finish(self):
        self.done = True
        return []

    def usage_chunk(self):
        if self._usage_chunk is not None:
            return copy.deepcopy(self._usage_chunk)
        return None


def error_from_openai(status, body, text, retry_after=None):
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        error = error_object(err["message"], err.get("type") or _STATUS_TYPE.get(status, "server_error"),
                             err.get("param"), err.get("code"))
    else:
        snippet = (text or "").strip()[:200]
        error = error_object(f"The upstream answered HTTP {status}" + (f": {snippet}" if snippet else "."),
                             _STATUS_TYPE.get(status, "server_error"), None, None)
    if status == 429 and not error["code"]:
        error["code"] = "rate_limit_exceeded"
    # Out of credit: no wait makes it pass, and it is the operator's account, not the client's request.
    reason = "account" if error["code"] == "insufficient_quota" else None
    return UpstreamError(status if 400 <= status < 600 else 502, error, retry_after, upstream_status=status,
                         reason=reason)
