"""Gemini SSE events → OpenAI `chat.completion.chunk` dicts."""
from gateway.translate.common import chunk, usage_chunk as make_usage_chunk

from .errors import error_from_gemini
from .response import _items, _no_candidates, _usage, finish_reason


class GeminiStream:
    """Gemini SSE events (each a whole GenerateContentResponse) → OpenAI chunks.

    Text parts are new fragments, function calls arrive whole, usageMetadata is cumulative (the last
    one wins), and the body just ends (no [DONE]); `finish()` closes every choice. Without any
    finishReason it still finishes, with "stop", and sets `truncated` for the caller to judge.
    """

    def __init__(self, model, id_, created):
        self.model, self.id, self.created = model, id_, created
        self.finish_reason = None
        self._metadata = None  # the last usageMetadata with counts: cumulative, so only the last one matters
        self.truncated = False
        self._calls = {}    # candidate index → tool calls emitted so far (insertion order = choice order)
        self._reasons = {}  # candidate index → Gemini finishReason

    def _chunk(self, delta, index, reason=None):
        return chunk(self.id, self.created, self.model, delta, reason, index)

    def _start(self, index, content=""):
        self._calls[index] = 0
        return self._chunk({"role": "assistant", "content": content}, index)

    def feed(self, data):
        if "error" in data:
            code = (data["error"] or {}).get("code") if isinstance(data["error"], dict) else None
            raise error_from_gemini(code if isinstance(code, int) and code >= 400 else 500, data, "")
        candidates = data.get("candidates") or []
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            raise _no_candidates(data)
        metadata = data.get("usageMetadata") or {}
        if any(key.endswith("TokenCount") for key in metadata):  # Vertex sends count-less early events
            self._metadata = metadata
        out = []
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            items = list(_items(candidate))
            if index not in self._calls:
                # As OpenAI: content null in the role chunk when the answer opens with a tool call.
                opens_with = next((kind for kind, value in items if kind == "tool_call" or value), None)
                out.append(self._start(index, None if opens_with == "tool_call" else ""))
            for kind, value in items:
                if kind == "content" and value:
                    out.append(self._chunk({"content": value}, index))
                elif kind == "tool_call":
                    out.append(self._chunk({"tool_calls": [{"index": self._calls[index], **value}]}, index))
                    self._calls[index] += 1
            if candidate.get("finishReason"):
                self._reasons[index] = candidate["finishReason"]
        return out

    @property
    def usage(self):
        """OpenAI usage from the last counts Gemini sent (built when asked, not for every event)."""
        return _usage(self._metadata) if self._metadata is not None else None

    def finish(self):
        out = [] if self._calls else [self._start(0)]
        for index, calls in self._calls.items():
            if index not in self._reasons:
                self.truncated = True
            reason = finish_reason(self._reasons.get(index), calls > 0)
            out.append(self._chunk({}, index, reason))
            self.finish_reason = self.finish_reason or reason
        return out

    def usage_chunk(self):
        """The `choices: []` usage chunk, or None when Gemini reported no usage at all."""
        usage = self.usage
        return make_usage_chunk(self.id, self.created, self.model, usage) if usage else None
