"""Google Gemini API: `{base}/v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`."""
from urllib.parse import quote

from gateway.providers.base import Provider
from gateway.translate import gemini as t


class _State:
    """Adapts the pure GeminiStream: Gemini has no terminator, the body's end finishes the answer."""

    def __init__(self, model, id_, created):
        self._s = t.GeminiStream(model, id_, created)
        self._finished = False

    def feed(self, event, data):  # noqa: ARG002 - Gemini events have no names
        return self._s.feed(data)

    def finish(self):
        self._finished = True
        return self._s.finish()

    @property
    def finish_reason(self):
        if not self._finished or getattr(self._s, "truncated", False):
            return None
        return self._s.finish_reason

    @property
    def usage(self):
        return self._s.usage

    def usage_chunk(self):
        return self._s.usage_chunk()


class GeminiProvider(Provider):
    kind = "gemini"
    inlines_images = True   # Gemini's API cannot fetch an image URL itself

    def prepare(self, request, model, stream):
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key:
            headers["x-goog-api-key"] = self.spec.api_key
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        url = f"{self.spec.base_url}/v1beta/models/{quote(model.upstream, safe='')}{method}"
        return url, headers, t.to_gemini(request, model.default_max_tokens, model.capabilities)

    def parse(self, body, model, id_, created):
        return t.from_gemini(body, model.name, id_, created)

    def stream_state(self, model, id_, created):
        return _State(model.name, id_, created)

    def error(self, status, body, text, retry_after=None):
        return t.error_from_gemini(status, body, text, retry_after)
