"""Literal provider wire bodies for tests (shapes from shared/reference/provider-wire-formats.md)."""
import json

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
GEMINI_BASE = "https://generativelanguage.googleapis.com/v1beta/models/"


def openai_completion(text="Hello from OpenAI.", model="gpt-4o-mini-2024-07-18"):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1741569952, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}


def openai_error(status, message="The server had an error processing your request.", type_="server_error",
                 code=None):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_message(text="Hello from Claude.", model="claude-haiku-4-5-20251001"):
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 5, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}


def anthropic_error(status, type_="api_error", message="Internal server error"):
    return {"type": "error", "error": {"type": type_, "message": message}}


def _event(name, data):
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def anthropic_stream(pieces, model="claude-haiku-4-5-20251001", complete=True):
    out = _event("message_start", {"type": "message_start", "message": {
        "id": "msg_02", "type": "message", "role": "assistant", "content": [], "model": model,
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 11, "output_tokens": 1}}})
    out += _event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
    out += 'event: ping\ndata: {"type": "ping"}\n\n'
    for p in pieces:
        out += _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": p}})
    if complete:
        out += _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        out += _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                           "stop_sequence": None},
                                        "usage": {"output_tokens": len(pieces)}})
        out += _event("message_stop", {"type": "message_stop"})
    return out.encode()


def openai_stream(pieces, complete=True, model="gpt-4o-mini-2024-07-18"):
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]
    if complete:
        events += [chunk({}, "stop"), {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                                       "model": model, "choices": [],
                                       "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces),
                                                 "total_tokens": 5 + len(pieces)}}]
    out = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (out + ("data: [DONE]\n\n" if complete else "")).encode()


def gemini_response(text="Hello from Gemini.", model="gemini-2.5-flash"):
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 12},
            "modelVersion": model, "responseId": "r1"}
