"""A stream continued after a cut: the client's max_tokens bounds the whole answer, not each attempt, and no
continuation is bought for a client that has gone. Upstreams mocked with `responses` in their wire formats."""
import json
import socket

import pytest
import responses

from gateway.handlers.chat import _connected
from gateway.providers.resume import continuation_request, left_to_write, tokens_spent
from tests.providers.wire import ANTHROPIC_URL, OPENAI_URL, anthropic_stream, openai_stream

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "stream": True}
WORDS = ["one", " two", " three", " four"]


@pytest.fixture
def manager(make_app):
    app, _ = make_app()
    manager = app.extensions["gateway"].manager
    manager.sleep = lambda seconds: None
    return manager


def run(manager, body):
    stream, _ = manager.run(body, manager.registry.resolve(body["model"]), "chatcmpl-x", 1, stream=True)
    return stream, list(stream)


def text_of(chunks):
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def cut_then_claude():
    """OpenAI streams WORDS and is cut before its end; Claude (gpt-4o-mini's first fallback) would say " five."."""
    responses.post(OPENAI_URL, body=openai_stream(WORDS, complete=False), content_type="text/event-stream",
                   stream=True)
    return responses.post(ANTHROPIC_URL, body=anthropic_stream([" five."]), content_type="text/event-stream",
                          stream=True)


@responses.activate
def test_a_continuation_asks_only_for_what_the_limit_has_left(manager):
    claude = cut_then_claude()
    _, chunks = run(manager, {**BODY, "max_tokens": 20})
    assert text_of(chunks) == "one two three four five."
    sent = json.loads(claude.calls[0].request.body)
    assert sent["max_tokens"] == 20 - 5   # 4 deltas, or 19 characters / 4 rounded up: 5


@responses.activate
def test_a_cut_at_the_limit_ends_the_answer_at_its_length_without_another_call(manager):
    claude = cut_then_claude()
    _, chunks = run(manager, {**BODY, "max_completion_tokens": 4})
    assert text_of(chunks) == "one two three four"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert {c["id"] for c in chunks} == {"chatcmpl-s"}
    assert claude.call_count == 0


@responses.activate
def test_no_continuation_is_asked_for_a_client_that_has_gone(manager):
    claude = cut_then_claude()
    stream, _ = manager.run(BODY, manager.registry.resolve("gpt-4o-mini"), "chatcmpl-x", 1, stream=True)
    stream.still_wanted = lambda: False
    with pytest.raises(Exception) as e:
        list(stream)
    assert getattr(e.value, "status", None) == 502 and claude.call_count == 0


@pytest.mark.parametrize("request_, spent, left", [
    ({"max_tokens": 10}, 4, 6), ({"max_completion_tokens": 10, "max_tokens": 50}, 4, 6), ({}, 4, None),
])
def test_left_to_write(request_, spent, left):
    assert left_to_write(request_, spent) == left


@pytest.mark.parametrize("text, deltas, usage, spent", [
    ("one two", 2, None, 2),                               # characters / 4 rounded up: 2
    ("a" * 40, 3, None, 10),                               # long deltas: the characters say more
    ("one", 1, {"completion_tokens": 7}, 7),               # what the upstream counted, when it did
    ("one", 1, {"completion_tokens": "x"}, 1),
])
def test_tokens_spent_errs_towards_stopping_short(text, deltas, usage, spent):
    assert tokens_spent(len(text), deltas, usage) == spent


def test_the_continuation_request_carries_the_prefill_and_the_limit_left():
    body = continuation_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}, "Hello ", 3)
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello"} and body["max_tokens"] == 7


def test_a_client_is_connected_until_it_closes_its_side():
    ours, theirs = socket.socketpair()
    try:
        assert _connected(ours)
        theirs.sendall(b"GET / HTTP/1.1\r\n")      # a pipelined request is no goodbye
        assert _connected(ours)
        ours.recv(100)
        theirs.close()
        assert not _connected(ours)
    finally:
        ours.close()


@responses.activate
def test_a_continued_answer_counts_and_prices_every_attempt(make_app):
    from decimal import Decimal
    from sqlalchemy import select
    from gateway.store.models import gateway_logs
    app, key = make_app()
    client = app.test_client()
    cut_then_claude()
    resp = client.post("/v1/chat/completions", json={**BODY, "stream_options": {"include_usage": True}},
                       headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"})
    events = [json.loads(line[6:]) for line in resp.get_data(as_text=True).split("\n")
              if line.startswith("data: {")]
    usage, cost = events[-1]["usage"], Decimal(str(events[-1]["cost_usd"]))
    claude = {"prompt_tokens": 11, "completion_tokens": 1}   # tests/providers/wire.py's anthropic_stream
    # OpenAI's attempt: cut before its usage chunk; 4 deltas, 19 characters: 5 tokens. Its prompt is taken as
    # Claude's less the prefill since (5): 6.
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (6, 5 + 1, 6 + 6)
    prices = app.extensions["gateway"].prices
    registry = app.extensions["gateway"].registry
    billed = (prices.cost(registry.resolve("gpt-4o-mini").name, {"prompt_tokens": 6, "completion_tokens": 5})
              + prices.cost(registry.resolve("claude-haiku-4-5-20251001").name, claude))
    assert abs(cost - billed) <= Decimal("0.000001")
    app.extensions["gateway"].log_writer.flush(10)
    with app.extensions["gateway"].engine.connect() as conn:
        row = conn.execute(select(gateway_logs).where(
            gateway_logs.c.request_id == resp.headers["X-Request-Id"])).one()
    assert (row.prompt_tokens, row.completion_tokens) == (6, 6) and abs(row.cost_usd - billed) <= Decimal("1e-6")
