"""The exact-match cache and the rate limiter on the request path, on the in-process stores and real Redis."""
import json
import threading

import pytest
import responses
from openai.types.chat import ChatCompletionChunk

from gateway.cache.exact import decode
from gateway.store.keys import create_key
from tests.providers.wire import (ANTHROPIC_URL, OPENAI_URL, anthropic_message, anthropic_stream, openai_completion,
                                  openai_error, openai_stream)

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0}


@pytest.fixture(params=["memory", "redis"])
def gw(request, make_app):
    env = {}
    if request.param == "redis":
        env = {"REDIS_URL": request.getfixturevalue("redis_url"),
               "GATEWAY_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}

    def factory(app_env=None, **key_settings):
        app, _ = make_app(**{"ANTHROPIC_API_KEY": None, "GEMINI_API_KEY": None, **env, **(app_env or {})})
        key, _ = create_key(app.extensions["gateway"].engine, "k", **key_settings)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        return client
    return factory


@responses.activate
def test_a_repeated_request_is_answered_from_the_cache(gw):
    client = gw()
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    first = client.post("/v1/chat/completions", json=BODY)
    second = client.post("/v1/chat/completions", json={**BODY, "user": "someone"})  # `user` does not change it
    assert first.headers["X-Cache-Hit"] == "miss" and second.headers["X-Cache-Hit"] == "exact"
    assert upstream.call_count == 1
    a, b = first.get_json(), second.get_json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert a["id"] != b["id"]
    assert second.headers["X-Cost-USD"] == "0.000000" and b["cost_usd"] == 0
    assert second.headers["X-Provider"] == "openai"
    assert float(first.headers["X-Cost-USD"]) > 0


@responses.activate
def test_a_changed_parameter_misses(gw):
    client = gw()
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    client.post("/v1/chat/completions", json=BODY)
    resp = client.post("/v1/chat/completions", json={**BODY, "temperature": 0.5})
    assert resp.headers["X-Cache-Hit"] == "miss" and upstream.call_count == 2


def _answer(resp):
    """The text of a plain or streamed answer."""
    if resp.mimetype == "text/event-stream":
        events = [e[6:] for e in resp.get_data(as_text=True).split("\n\n") if e and e != "data: [DONE]"]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, events) if c["choices"])
    return resp.get_json()["choices"][0]["message"]["content"]


def _answering(text, stream):
    if stream:
        return dict(body=openai_stream([text]), content_type="text/event-stream", stream=True)
    return dict(json=openai_completion(text))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@responses.activate
def test_no_cache_gets_a_fresh_answer_which_replaces_the_stored_one(gw, stream):
    client = gw()
    body = {**BODY, "stream": stream}
    responses.post(OPENAI_URL, **_answering("old answer", stream))
    assert _answer(client.post("/v1/chat/completions", json=body)) == "old answer"
    hit = client.post("/v1/chat/completions", json=body)  # with Redis, now also in this worker's near tier
    assert hit.headers["X-Cache-Hit"] == "exact" and _answer(hit) == "old answer"
    responses.replace(responses.POST, OPENAI_URL, **_answering("new answer", stream))
    fresh = client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
    assert _answer(fresh) == "new answer"
    assert "X-Cache-Hit" not in fresh.headers   # the cache was not read
    assert len(responses.calls) == 2
    after = client.post("/v1/chat/completions", json=body)
    assert after.headers["X-Cache-Hit"] == "exact" and _answer(after) == "new answer"
    assert len(responses.calls) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@responses.activate
def test_a_refresh_answered_by_a_fallback_model_keeps_the_stored_answer(gw, stream):
    client = gw(app_env=WITH_CLAUDE)
    body = {**BODY, "stream": stream}
    responses.post(OPENAI_URL, **_answering("stored answer", stream))
    client.post("/v1/chat/completions", json=body).get_data()
    responses.replace(responses.POST, OPENAI_URL, json=openai_error(503), status=503)
    if stream:
        responses.post(ANTHROPIC_URL, body=anthropic_stream(["Claude ", "here"]), content_type="text/event-stream",
                       stream=True)
    else:
        responses.post(ANTHROPIC_URL, json=anthropic_message())
    refreshed = client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
    refreshed.get_data()
    assert refreshed.headers["X-Failover"] == "true"
    after = client.post("/v1/chat/completions", json=body, headers={"X-Gateway-Failover": "off"})
    assert after.headers["X-Cache-Hit"] == "exact" and _answer(after) == "stored answer"


@pytest.mark.parametrize("upstream", [
    dict(body=openai_stream(["Hel", "lo"], complete=False)),                               # cut
    dict(body=openai_stream(["Hel"], complete=False) + b'data: {"choices": [5]}\n\n'
         + openai_stream(["lo"]).split(b"\n\n", 1)[1]),                                   # an event skipped
    dict(body=openai_stream(["Hello"])),                                                  # whole
], ids=["cut", "malformed", "whole"])
@responses.activate
def test_a_streamed_refresh_never_releases_a_lock_and_stores_only_a_whole_answer(gw, upstream):
    client = gw()
    body = {**BODY, "stream": True}
    responses.post(OPENAI_URL, **_answering("stored answer", False))
    client.post("/v1/chat/completions", json=BODY)   # stored, and its lock released, before it returns
    cache = client.application.extensions["gateway"].cache
    unlocked = []
    real_unlock = cache.unlock
    cache.unlock = lambda key: (unlocked.append(key), real_unlock(key))[1]
    responses.replace(responses.POST, OPENAI_URL, content_type="text/event-stream", stream=True, **upstream)
    client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"}).get_data()
    assert unlocked == []   # a refresh holds no lock: one it released would be another request's
    after = client.post("/v1/chat/completions", json=body)
    whole = upstream["body"] == openai_stream(["Hello"])
    assert after.headers["X-Cache-Hit"] == "exact" and _answer(after) == ("Hello" if whole else "stored answer")


@responses.activate
def test_a_refresh_of_a_body_too_deep_to_key_stores_nothing(gw):
    client = gw()
    cache = client.application.extensions["gateway"].cache
    stored = []
    real_set = cache.set
    cache.set = lambda key, entry, ttl: (stored.append(key), real_set(key, entry, ttl))[1]
    responses.post(OPENAI_URL, json=openai_completion())
    deep = []
    for _ in range(300):
        deep = [deep]
    resp = client.post("/v1/chat/completions", json={**BODY, "x_extra": deep}, headers={"Cache-Control": "no-cache"})
    assert resp.status_code == 200 and stored == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@responses.activate
def test_no_store_neither_reads_nor_writes_the_cache(gw, stream):
    client = gw()
    body = {**BODY, "stream": stream}
    responses.post(OPENAI_URL, **_answering("stored answer", stream))
    client.post("/v1/chat/completions", json=body).get_data()
    responses.replace(responses.POST, OPENAI_URL, **_answering("private answer", stream))
    private = client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-store"})
    assert _answer(private) == "private answer" and "X-Cache-Hit" not in private.headers
    after = client.post("/v1/chat/completions", json=body)
    assert after.headers["X-Cache-Hit"] == "exact" and _answer(after) == "stored answer"
    # Nor is a request of its own stored.
    other = {**body, "temperature": 0.7}
    client.post("/v1/chat/completions", json=other, headers={"Cache-Control": "no-store"}).get_data()
    assert client.post("/v1/chat/completions", json=other).headers["X-Cache-Hit"] == "miss"
    assert len(responses.calls) == 4


@responses.activate
def test_a_key_with_the_cache_off_always_goes_upstream(gw):
    client = gw(cache_enabled=False)
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    client.post("/v1/chat/completions", json=BODY)
    client.post("/v1/chat/completions", json=BODY)
    assert upstream.call_count == 2


@responses.activate
def test_tenants_never_read_each_others_answers(gw):
    alice, bob = gw(), gw()
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    alice.post("/v1/chat/completions", json=BODY)
    assert bob.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "miss"
    assert upstream.call_count == 2


@responses.activate
def test_errors_are_never_cached(gw):
    client = gw()
    responses.post(OPENAI_URL, json={"error": {"message": "bad", "type": "invalid_request_error", "param": None,
                                               "code": None}}, status=400)
    client.post("/v1/chat/completions", json=BODY)
    responses.replace(responses.POST, OPENAI_URL, json=openai_completion())
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "miss"


WITH_CLAUDE = {"ANTHROPIC_API_KEY": "sk-ant-test", "GATEWAY_RETRY_BACKOFF": "0.001"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@responses.activate
def test_an_answer_from_a_fallback_model_is_not_stored(gw, stream):
    client = gw(app_env=WITH_CLAUDE)
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    if stream:
        claude = responses.post(ANTHROPIC_URL, body=anthropic_stream(["Hi ", "there"]),
                                content_type="text/event-stream", stream=True)
    else:
        claude = responses.post(ANTHROPIC_URL, json=anthropic_message())
    body = {**BODY, "stream": stream}
    failed_over = client.post("/v1/chat/completions", json=body)
    failed_over.get_data()
    assert failed_over.headers["X-Failover"] == "true" and failed_over.headers["X-Cache-Hit"] == "miss"
    assert claude.call_count == 1
    # OpenAI is back: its model answers, not Claude's stored answer; and that answer is stored.
    responses.replace(responses.POST, OPENAI_URL, json=openai_completion())
    again = client.post("/v1/chat/completions", json=BODY)
    assert again.headers["X-Cache-Hit"] == "miss" and again.headers["X-Provider"] == "openai"
    third = client.post("/v1/chat/completions", json={**BODY, "stream": stream},
                        headers={"X-Gateway-Failover": "off"})
    third.get_data()
    assert third.headers["X-Cache-Hit"] == "exact" and third.headers["X-Provider"] == "openai"
    assert claude.call_count == 1


@responses.activate
def test_a_streamed_miss_is_stored_and_a_streamed_hit_is_replayed_as_proper_sse(gw):
    client = gw()
    upstream = responses.post(OPENAI_URL, body=openai_stream(["Hel", "lo", "!"]), content_type="text/event-stream",
                              stream=True)
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    live = client.post("/v1/chat/completions", json=body)
    live_text = live.get_data(as_text=True)
    assert live.headers["X-Cache-Hit"] == "miss"
    hit = client.post("/v1/chat/completions", json=body)
    assert hit.headers["X-Cache-Hit"] == "exact" and upstream.call_count == 1
    events = [e[6:] for e in hit.get_data(as_text=True).split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 8
    assert len({c["id"] for c in chunks}) == 1
    assert "Hello!" in "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                               for e in live_text.split("\n\n") if e and e != "data: [DONE]"
                               and json.loads(e[6:])["choices"])
    # A non-streamed request for the same content is served from the same entry.
    whole = client.post("/v1/chat/completions", json=BODY)
    assert whole.headers["X-Cache-Hit"] == "exact" and whole.get_json()["choices"][0]["message"]["content"] == "Hello!"


@responses.activate
def test_a_cut_stream_is_never_stored(gw):
    client = gw()
    responses.post(OPENAI_URL, body=openai_stream(["Hel", "lo"], complete=False), content_type="text/event-stream",
                   stream=True)
    client.post("/v1/chat/completions", json={**BODY, "stream": True}).get_data()
    responses.replace(responses.POST, OPENAI_URL, json=openai_completion())
    assert client.post("/v1/chat/completions", json=BODY).headers["X-Cache-Hit"] == "miss"


@responses.activate
def test_identical_concurrent_requests_make_one_upstream_call(gw):
    client = gw()
    import time

    def slow(request):
        time.sleep(0.3)
        return 200, {}, json.dumps(openai_completion())
    responses.add_callback(responses.POST, OPENAI_URL, callback=slow)
    results = []

    def go():
        c = client.application.test_client()
        c.environ_base.update(client.environ_base)
        results.append(c.post("/v1/chat/completions", json=BODY).status_code)
    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert len(responses.calls) == 1


@responses.activate
def test_rate_limit_headers_and_429(gw):
    client = gw(rate_limit_per_minute=3, cache_enabled=False)
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    seen = [client.post("/v1/chat/completions", json=BODY) for _ in range(4)]
    assert [r.status_code for r in seen] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in seen] == ["2", "1", "0", "0"]
    assert all(r.headers["X-RateLimit-Limit"] == "3" for r in seen)
    assert 0 < int(seen[0].headers["X-RateLimit-Reset"]) <= 60
    err = seen[3].get_json()["error"]
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    assert 1 <= int(seen[3].headers["Retry-After"]) <= 60
    assert upstream.call_count == 3    # the refused request never reached the provider


@responses.activate
def test_near_tier_hits_never_change_the_shared_entry(make_app, redis_url, redis_prefix):
    """Hits of every kind served from the near tier (plain, streamed with usage) leave its entry as Redis has it."""
    app, _ = make_app(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None, REDIS_URL=redis_url,
                      GATEWAY_REDIS_PREFIX=redis_prefix, GATEWAY_CACHE_NEAR_SECONDS="60")
    cache = app.extensions["gateway"].cache
    key, _ = create_key(app.extensions["gateway"].engine, "k")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    upstream = responses.post(OPENAI_URL, json=openai_completion())
    client.post("/v1/chat/completions", json=BODY)
    first = client.post("/v1/chat/completions", json=BODY)   # read from Redis: now in the near tier
    assert first.headers["X-Cache-Hit"] == "exact" and len(cache.near) == 1
    stream = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    for body in (BODY, stream, BODY, stream):
        resp = client.post("/v1/chat/completions", json=body)
        resp.get_data()
        assert resp.headers["X-Cache-Hit"] == "exact"
    last = client.post("/v1/chat/completions", json=BODY)
    assert upstream.call_count == 1
    a, b = first.get_json(), last.get_json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"] and b["cost_usd"] == 0 and a["id"] != b["id"]
    (near_key, (_, shared)), = cache.near._items.items()
    assert shared == decode(cache.backend.get(cache._entry_key(near_key))) and "cost_usd" not in shared["completion"]


def test_without_redis_there_is_no_near_tier(make_app):
    app, _ = make_app()
    assert app.extensions["gateway"].cache.near is None


def _cache_counts(app):
    from gateway import metrics
    text = metrics.render(app.extensions["gateway"]).decode()
    return {r: sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith("gateway_cache_requests_total{") and f'result="{r}"' in ln) for r in ("hit", "miss")}


@responses.activate
def test_metrics_count_cache_hits_and_misses(make_app):
    app, key = make_app(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    responses.post(OPENAI_URL, json=openai_completion())
    before = _cache_counts(app)
    for headers in ({}, {}, {}, {"Cache-Control": "no-cache"}):   # miss, hit, hit, not consulted
        client.post("/v1/chat/completions", json=BODY, headers=headers)
    after = _cache_counts(app)
    assert (after["miss"] - before["miss"], after["hit"] - before["hit"]) == (1, 2)


@responses.activate
def test_a_body_seen_before_is_not_validated_or_hashed_again(make_app, monkeypatch):
    from gateway.handlers import chat
    app, key = make_app(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    responses.post(OPENAI_URL, json=openai_completion())
    checked, hashed = [], []
    monkeypatch.setattr(chat, "validate_chat", lambda body: (checked.append(1), chat.validate_chat)[0])
    real_key = chat.cache_key
    monkeypatch.setattr(chat, "cache_key", lambda body, scope: (hashed.append(scope), real_key(body, scope))[1])
    monkeypatch.setattr(chat, "_seen", {})
    raw = json.dumps({**BODY, "temperature": 0.3}).encode()
    for _ in range(4):
        resp = client.post("/v1/chat/completions", data=raw, content_type="application/json")
        assert resp.status_code == 200
    assert len(checked) == 1 and len(hashed) == 1 and resp.headers["X-Cache-Hit"] == "exact"
    reordered = json.dumps(dict(reversed({**BODY, "temperature": 0.3}.items()))).encode()   # other bytes
    assert client.post("/v1/chat/completions", data=reordered, content_type="application/json").headers[
        "X-Cache-Hit"] == "exact"
    assert len(checked) == 2 and len(hashed) == 2


def test_an_invalid_body_is_refused_every_time(client):
    raw = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}).encode()
    for _ in range(3):
        resp = client.post("/v1/chat/completions", data=raw, content_type="application/json")
        assert resp.status_code == 400 and resp.get_json()["error"]["param"] == "messages[0].role"


def test_the_seen_bodies_are_bounded(client, monkeypatch):
    from gateway.handlers import chat
    monkeypatch.setattr(chat, "_seen", {})
    for n in range(chat._SEEN_BODIES + 10):
        client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": str(n)}]})
    assert 0 < len(chat._seen) <= chat._SEEN_BODIES
    big = {"model": "nope", "messages": [{"role": "user", "content": "x" * chat._SEEN_BYTES}]}
    client.post("/v1/chat/completions", json=big)
    assert all(len(raw) <= chat._SEEN_BYTES for raw in chat._seen)


@pytest.mark.parametrize("stream", [False, True])
@responses.activate
def test_a_shared_entry_is_not_served_to_a_key_past_its_own_ttl(make_app, monkeypatch, stream):
    # With GATEWAY_CACHE_SHARED an entry lived as long as the TTL of the key that wrote it, whatever the reader's.
    import time as clock
    app, _ = make_app(GATEWAY_CACHE_SHARED="true", ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    clients = []
    for ttl in (3600, 5, 3600):
        key, _ = create_key(app.extensions["gateway"].engine, f"ttl-{ttl}", cache_ttl_seconds=ttl)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
        clients.append(client)
    writer, short, long_ = clients
    responses.post(OPENAI_URL, json=openai_completion())
    if stream:  # the second upstream call, the short key's, is a stream
        responses.post(OPENAI_URL, body=openai_stream(["Hi"]), content_type="text/event-stream", stream=True)
    else:
        responses.post(OPENAI_URL, json=openai_completion())
    body = {**BODY, "messages": [{"role": "user", "content": "shared and aging"}]}
    assert writer.post("/v1/chat/completions", json=body).headers["X-Cache-Hit"] == "miss"
    later = clock.time() + 60
    monkeypatch.setattr("gateway.handlers.chat.time.time", lambda: later)
    assert long_.post("/v1/chat/completions", json={**body, "stream": stream}).headers["X-Cache-Hit"] == "exact"
    assert short.post("/v1/chat/completions", json={**body, "stream": stream}).headers["X-Cache-Hit"] == "miss"
    assert len(responses.calls) == 2
