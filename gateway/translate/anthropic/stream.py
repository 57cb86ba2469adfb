"""Anthropic SSE events → OpenAI `chat.completion.chunk` dicts."""
from gateway.translate.common import chunk, usage_chunk

from .errors import _ERRORS, _upstream_error
from .request import JSON_TOOL
from .response import _finish, _usage


class AnthropicStream:
    """Turns Anthropic SSE events into OpenAI `chat.completion.chunk` dicts, one event at a time.

    After the stream: `finish_reason` (None if message_stop never came), `usage` (None before
    message_start), `done` (True after message_stop).
    """

    def __init__(self, model, id_, created):
        self.model, self.id, self.created = model, id_, created
        self.finish_reason, self.done = None, False
        self._raw_usage, self._stop_reason = None, None
        self._blocks = {}  # Anthropic block index → {"k": OpenAI tool index or None for JSON, "args": bool}
        self._tool_calls, self._json_mode = 0, False
        self._role_sent = False

    @property
    def usage(self):
        return _usage(self._raw_usage) if self._raw_usage is not None else None

    def usage_chunk(self):
        """The final `choices: []` chunk for clients that asked for stream_options.include_usage."""
        return usage_chunk(self.id, self.created, self.model, self.usage)

    def feed(self, event, data):
        """One SSE event (name may be "", then data["type"] names it) → the chunks to send, maybe none."""
        handler = self._HANDLERS.get(event or data.get("type"))
        return handler(self, data) if handler else []  # ping and unknown future events

    def _chunk(self, delta, finish_reason=None):  # choice index is always 0, whatever the block index
        return chunk(self.id, self.created, self.model, delta, finish_reason)

    def _arguments(self, block, fragment):
        if block["k"] is None:  # the JSON tool's input is the answer itself
            return self._chunk({"content": fragment})
        return self._chunk({"tool_calls": [{"index": block["k"], "function": {"arguments": fragment}}]})

    def _role(self, content=""):
        """OpenAI's first chunk, once: `content` "" before text, None when the answer opens with a tool call."""
        if self._role_sent:
            return []
        self._role_sent = True
        return [self._chunk({"role": "assistant", "content": content})]

    def _message_start(self, data):
        self._raw_usage = dict((data.get("message") or {}).get("usage") or {})
        return []  # the role chunk waits for the first block, which says whether text or a tool call comes

    def _block_start(self, data):
        block = data.get("content_block") or {}
        calls_a_tool = block.get("type") == "tool_use" and block.get("name") != JSON_TOOL
        role = self._role(None if calls_a_tool else "")
        if block.get("type") == "text" and block.get("text"):
            return role + [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return role  # text (empty), thinking, server tools
        if block.get("name") == JSON_TOOL:
            self._json_mode = True
            self._blocks[data.get("index")] = {"k": None, "args": False}
            return role
        # OpenAI's index counts tool calls only; Anthropic's counts every content block.
        k, self._tool_calls = self._tool_calls, self._tool_calls + 1
        self._blocks[data.get("index")] = {"k": k, "args": False}
        # The block's "input": {} is a placeholder; the arguments come as input_json_delta fragments.
        return role + [self._chunk({"tool_calls": [{"index": k, "id": block["id"], "type": "function",
                                                    "function": {"name": block["name"], "arguments": ""}}]})]

    def _block_delta(self, data):
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta["text"]})] if delta.get("text") else []
        block = self._blocks.get(data.get("index"))
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and block:
            block["args"] = True
            return [self._arguments(block, delta["partial_json"])]
        return []  # empty fragments; thinking, signature and citations deltas

    def _block_stop(self, data):
        block = self._blocks.get(data.get("index"))
        if block and not block["args"]:
            # A call without arguments may stream no JSON at all; clients parse arguments, so send "{}".
            block["args"] = True
            return [self._arguments(block, "{}")]
        return []

    def _message_delta(self, data):
        self._stop_reason = (data.get("delta") or {}).get("stop_reason") or self._stop_reason
        # message_delta usage is cumulative: it replaces message_start's counts (output_tokens there
        # is a placeholder), never adds to them.
        counts = {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
        self._raw_usage = {**(self._raw_usage or {}), **counts}
        return []

    def _message_stop(self, data):
        self.finish_reason = _finish(self._stop_reason, self._json_mode, self._tool_calls > 0)
        self.done = True
        return self._role() + [self._chunk({}, self.finish_reason)]

    def finish(self):
        """The body ended. After message_delta the answer is whole (stop reason and final usage are in),
        so a missing message_stop only loses the terminator: finish as it would have. Before it, the
        stream was cut: nothing to add, and `finish_reason` stays None."""
        if self.done or self._stop_reason is None:
            return []
        return self._message_stop({})

    def _error(self, data):
        # The HTTP status was already 200; the error type is the only signal of what went wrong.
        error = data.get("error") or {}
        raised = _upstream_error(error.get("type"), error.get("message") or "Upstream stream error.",
                                 _ERRORS.get(error.get("type"), (500,))[0])
        raised.upstream_status = None  # common.UpstreamError: None for stream events
        raise raised

    _HANDLERS = {"message_start": _message_start, "content_block_start": _block_start,
                 "content_block_delta": _block_delta, "content_block_stop": _block_stop,
                 "message_delta": _message_delta, "message_stop": _message_stop, "error": _error}
