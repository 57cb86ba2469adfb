"""Anthropic Messages API: `{base}/v1/messages`, `x-api-key`, `anthropic-version`."""
from gateway.providers.base import Provider
from gateway.translate import anthropic as t

API_VERSION = "2023-06-01"
_FALLBACK_MAX_TOKENS = 4096


class _State:
    """Adapts the pure AnthropicStream to the transport's feed/finish protocol."""

    def __init__(self, model, id_, created):
        self._s = t.AnthropicStream(model, id_, created)

    def feed(self, event, data):
        return self._s.feed(event, data)

    def finish(self):
        return self._s.finish()

    @property
    def finish_reason(self):
        return self._s.finish_reason if self._s.done else None

    @property
    def usage(self):
        return self._s.usage

    def usage_chunk(self):
        return self._s.usage_chunk()


class AnthropicProvider(Provider):
    kind = "anthropic"

    def prepare(self, request, model, stream):
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if self.spec.api_key:
            headers["x-api-key"] = self.spec.api_key
        body = t.to_anthropic(request, model.upstream,
                              model.default_max_tokens or model.max_output_tokens or _FALLBACK_MAX_TOKENS)
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return self.spec.base_url + "/v1/messages", headers, body

    def parse(self, body, model, id_, created):
        return t.from_anthropic(body, model.name, id_, created)

    def stream_state(self, model, id_, created):
        return _State(model.name, id_, created)

    def error(self, status, body, text, retry_after=None):
        return t.error_from_anthropic(status, body, text, retry_after=retry_after)
