"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, Together, Groq, ...)."""
from gateway.providers.base import Provider
from gateway.translate import openai as t


class _State(t.OpenAIStream):
    def feed(self, event, data):  # noqa: ARG002 - OpenAI streams have no event names
        return super().feed(data)


class OpenAIProvider(Provider):
    kind = "openai"
    stream_ends_with_done = True

    @property
    def configured(self):
        # A local OpenAI-compatible server (Ollama, vLLM) often needs no key at all.
        return bool(self.spec.api_key) or self.spec.name != "openai"

    def prepare(self, request, model, stream):
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key:
            headers["Authorization"] = "Bearer " + self.spec.api_key
        return self.spec.base_url + "/chat/completions", headers, t.to_openai(request, model.upstream, stream)

    def parse(self, body, model, id_, created):
        return t.from_openai(body, model.name, id_, created)

    def stream_state(self, model, id_, created):
        return _State(model.name, id_, created)

    def error(self, status, body, text, retry_after=None):
        return t.error_from_openai(status, body, text, retry_after)
