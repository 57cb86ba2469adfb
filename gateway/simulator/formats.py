"""Pure builders of each provider's response bodies and stream events (bytes), from an Ask and a Reply.

A stream is returned as a `Stream`: `head` events (before any content), `content` events (text
deltas / argument fragments: what `after=N` faults count), `tail` events (finish, usage) and the
`terminator` (`data: [DONE]`, `message_stop`; Gemini has none) so faults can drop it.
"""
import orjson

from .errors import gjson

FINGERPRINT = "fp_simulator"


class Stream:
    __slots__ = ("head", "content", "tail", "terminator")

    def __init__(self, head, content, tail, terminator=b""):
        self.head, self.content, self.tail, self.terminator = head, content, tail, terminator

    def joined(self):
        return b"".join(self.head) + b"".join(self.content) + b"".join(self.tail) + self.terminator


def fragments(text, sizes=(4, 7, 3, 9, 5, 2, 6)):
    """Split a JSON string at arbitrary (but deterministic) positions, as providers do."""
    out, i, k = [], 0, 0
    while i < len(text):
        n = sizes[k % len(sizes)]
        out.append(text[i:i + n])
        i, k = i + n, k + 1
    return out


# ---------------------------------------------------------------- OpenAI

OPENAI_FINISH = {"end": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}


def openai_usage(prompt, completion):
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def openai_body(rid, created, ask, reply, call_id):
    if reply.tool_name is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": reply.tool_name, "arguments": reply.tool_json}}],
            "refusal": None, "annotations": []}
    else:
        message = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
    return orjson.dumps({
        "id": rid, "object": "chat.completion", "created": created, "model": ask.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": OPENAI_FINISH[reply.finish]}],
        "usage": openai_usage(ask.prompt_tokens, reply.output_tokens),
        "service_tier": "default", "system_fingerprint": FINGERPRINT,
    })


def openai_stream(rid, created, ask, reply, call_id):
    # Every chunk shares the envelope; build its bytes once and splice the delta in.
    prefix = (b'data: {"id":' + orjson.dumps(rid) + b',"object":"chat.completion.chunk","created":'
              + str(created).encode() + b',"model":' + orjson.dumps(ask.model)
              + b',"system_fingerprint":"' + FINGERPRINT.encode() + b'","choices":[{"index":0,"delta":')
    usage_null = b',"usage":null' if ask.include_usage else b""
    open_end = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"

    def chunk(delta):
        return prefix + orjson.dumps(delta) + open_end

    if reply.tool_name is not None:
        head = [chunk({"role": "assistant", "content": None}),
                chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                       "function": {"name": reply.tool_name, "arguments": ""}}]})]
        content = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]})
                   for f in fragments(reply.tool_json)]
    else:
        head = [chunk({"role": "assistant", "content": "", "refusal": None})]
        content = [chunk({"content": p}) for p in reply.pieces]
    finish = (prefix + b'{},"logprobs":null,"finish_reason":"' + OPENAI_FINISH[reply.finish].encode()
              + b'"}]' + usage_null + b"}\n\n")
    tail = [finish]
    if ask.include_usage:
        tail.append(b"data: " + orjson.dumps({
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": ask.model,
            "system_fingerprint": FINGERPRINT, "choices": [],
            "usage": openai_usage(ask.prompt_tokens, reply.output_tokens)}) + b"\n\n")
    return Stream(head, content, tail, b"data: [DONE]\n\n")


# ---------------------------------------------------------------- Anthropic

ANTHROPIC_STOP = {"end": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens", "tool": "tool_use",
                  "refusal": "refusal"}


def anthropic_usage(ask, output_tokens):
    return {"input_tokens": ask.prompt_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": output_tokens, "service_tier": "standard"}


def _anthropic_content(reply, tool_id):
    if reply.tool_name is not None:
        return [{"type": "tool_use", "id": tool_id, "name": reply.tool_name, "input": reply.tool_args}]
    return [{"type": "text", "text": reply.text}] if reply.text else []


def anthropic_body(mid, ask, reply, tool_id):
    return orjson.dumps({
        "id": mid, "type": "message", "role": "assistant", "model": ask.model,
        "content": _anthropic_content(reply, tool_id),
        "stop_reason": ANTHROPIC_STOP[reply.finish], "stop_sequence": reply.stop_sequence,
        "usage": anthropic_usage(ask, reply.output_tokens),
    })


def _event(name, data):
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_TEXT_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
               b'{"type":"text_delta","text":')
_JSON_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
               b'{"type":"input_json_delta","partial_json":')


def anthropic_stream(mid, ask, reply, tool_id):
    head = [_event(b"message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": ask.model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": anthropic_usage(ask, 1)}})]
    content, tail = [], []
    if reply.tool_name is not None:
        head.append(_event(b"content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": tool_id, "name": reply.tool_name, "input": {}}}))
        head.append(PING)
        head.append(_JSON_DELTA + b'""}}\n\n')  # the first fragment is often empty
        content = [_JSON_DELTA + orjson.dumps(f) + b"}}\n\n" for f in fragments(reply.tool_json)]
    elif reply.finish != "refusal":
        head.append(_event(b"content_block_start", {"type": "content_block_start", "index": 0,
                                                    "content_block": {"type": "text", "text": ""}}))
        head.append(PING)
        content = [_TEXT_DELTA + orjson.dumps(p) + b"}}\n\n" for p in reply.pieces]
    if reply.finish != "refusal":
        tail.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    tail.append(_event(b"message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": ANTHROPIC_STOP[reply.finish], "stop_sequence": reply.stop_sequence},
        "usage": {"output_tokens": reply.output_tokens}}))
    return Stream(head, content, tail, b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


# ---------------------------------------------------------------- Gemini

GEMINI_FINISH = {"end": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}
THOUGHT_SIGNATURE = "c2ltdWxhdG9yLXRob3VnaHQtc2lnbmF0dXJl"  # base64("simulator-thought-signature")


def thinking_tokens(model):
    """2.5 and 3.x models think before answering; the simulator bills a fixed 8 tokens for it."""
    return 8 if ("2.5" in model or model.startswith("gemini-3")) else 0


def gemini_usage(ask, candidates):
    thoughts = thinking_tokens(ask.model)
    usage = {"promptTokenCount": ask.prompt_tokens, "candidatesTokenCount": candidates,
             "totalTokenCount": ask.prompt_tokens + candidates + thoughts,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": ask.prompt_tokens}]}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _candidate(parts, finish=None, finish_message=None):
    cand = {"content": {"parts": parts, "role": "model"}}
    if finish:
        cand["finishReason"] = finish
    cand["index"] = 0
    if finish_message:
        cand["finishMessage"] = finish_message
    return cand


def _gemini_response(rid, ask, cand, candidates_tokens):
    return {"candidates": [cand], "usageMetadata": gemini_usage(ask, candidates_tokens),
            "modelVersion": ask.model, "responseId": rid}


def _call_candidate(ask, reply):
    part = {"functionCall": {"name": reply.tool_name, "args": reply.tool_args}}
    if thinking_tokens(ask.model):
        part["thoughtSignature"] = THOUGHT_SIGNATURE
    return _candidate([part], "STOP", "Model generated function call(s).")


def gemini_blocked(rid, ask):
    """A prompt refused by the safety filters: no candidates, only promptFeedback."""
    return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH"},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"}]},
        "usageMetadata": {"promptTokenCount": ask.prompt_tokens, "totalTokenCount": ask.prompt_tokens,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": ask.prompt_tokens}]},
        "modelVersion": ask.model, "responseId": rid}


def gemini_body(rid, ask, reply):
    if reply.tool_name is not None:
        return gjson(_gemini_response(rid, ask, _call_candidate(ask, reply), reply.output_tokens))
    cand = _candidate([{"text": reply.text}], GEMINI_FINISH[reply.finish])
    return gjson(_gemini_response(rid, ask, cand, reply.output_tokens))


def gemini_events(rid, ask, reply):
    """One GenerateContentResponse per event; usage cumulative in each; the last one carries finishReason."""
    if reply.tool_name is not None:  # a function call always arrives whole, in one event
        return [gjson(_gemini_response(rid, ask, _call_candidate(ask, reply), reply.output_tokens))]
    pieces = reply.pieces or [""]
    events = []
    for i, piece in enumerate(pieces, 1):
        last = i == len(pieces)
        cand = _candidate([{"text": piece}], GEMINI_FINISH[reply.finish] if last else None)
        events.append(gjson(_gemini_response(rid, ask, cand, reply.output_tokens if last else i)))
    return events


def gemini_stream(payloads, sse):
    """`alt=sse`: `data: ...` + CRLF CRLF, no sentinel. Otherwise a JSON array streamed element by element.

    The final event (the one with finishReason) is the tail, so a cut before it is visible.
    """
    if sse:
        events = [b"data: " + p + b"\r\n\r\n" for p in payloads]
        return Stream([], events[:-1], events[-1:], b"")
    events = [(b"[" if i == 0 else b",\r\n") + p for i, p in enumerate(payloads)]
    return Stream([], events[:-1], events[-1:], b"\r\n]")
