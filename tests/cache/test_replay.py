"""A stored answer replayed as a stream, and a stream folded into the answer it stores, lose nothing."""
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.cache.replay import Accumulator, replay

REFUSAL = "I'm sorry, I can't help with that."


def _completion(message, finish="stop"):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}


def _fold(chunks):
    acc = Accumulator()
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        acc.add(c)
    return acc.completion(chunks[-1].get("usage"))["choices"][0]["message"]


def test_a_refusal_is_replayed_as_refusal_deltas():
    chunks = replay(_completion({"content": None, "refusal": REFUSAL}), "chatcmpl-2", 2, include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert "".join(d.get("refusal") or "" for d in deltas) == REFUSAL
    assert all(not d.get("content") for d in deltas)


def test_a_streamed_refusal_is_stored_with_content_null():
    message = _fold(replay(_completion({"content": None, "refusal": REFUSAL}), "chatcmpl-2", 2, True))
    assert message == {"role": "assistant", "content": None, "refusal": REFUSAL}
    ChatCompletion.model_validate(_completion(message))


def test_plain_content_round_trips_with_an_empty_first_delta_and_no_refusal():
    chunks = replay(_completion({"content": "Hello!", "refusal": None}), "chatcmpl-2", 2, True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert _fold(chunks) == {"role": "assistant", "content": "Hello!", "refusal": None}


def test_an_empty_answer_is_stored_with_empty_content():
    assert _fold(replay(_completion({"content": "", "refusal": None}), "c", 2, True))["content"] == ""
