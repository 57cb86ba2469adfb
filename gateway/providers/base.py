"""The Provider interface: how to ask one upstream, and how to read what it says.

An adapter holds no request state; each method is a thin layer over the pure functions in
`gateway.translate`. HTTP itself (pools, timeouts, SSE) lives in `transport`, once for all providers.
"""


class Provider:
    kind = ""            # its wire format
    stream_ends_with_done = False  # the stream ends with `data: [DONE]` (OpenAI) rather than at EOF

    inlines_images = False         # remote image URLs must be downloaded and sent inline (fetch.py)

    def __init__(self, spec):
        self.spec = spec

    @property
    def name(self):
        """The provider's name in the registry (e.g. "openai", "ollama")."""
        return self.spec.name

    @property
    def configured(self):
        """Whether the gateway can call this provider (a key is set, or none is needed)."""
        return bool(self.spec.api_key)

    def prepare(self, request, model, stream):
        """(url, headers, json body) for this request to `model`."""
        raise NotImplementedError

    def parse(self, body, model, id_, created):
        """A non-streaming upstream body → an OpenAI `chat.completion` dict."""
        raise NotImplementedError

    def stream_state(self, model, id_, created):
        """A fresh state machine with `feed(event, data) -> [chunk]`, `finish() -> [chunk]`,
        `finish_reason`, `usage` and `usage_chunk()`."""
        raise NotImplementedError

    def error(self, status, body, text, retry_after=None):
        """An upstream error response → UpstreamError in OpenAI's shape."""
        raise NotImplementedError
