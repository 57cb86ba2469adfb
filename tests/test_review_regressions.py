"""Regressions found by a review of the request path: each test failed before its fix.

Bad input that reached a translator (500s), a context-chain cycle, a provider key in a mid-stream error,
a breaker wedged by a probe that raised, n > 1 streams cut between choices, cost headers for unpriced
models, logprobs across cached answers, deep JSON in the cache key, breaker keys outside the Redis prefix,
client-chosen metric labels, and image downloads past the deadline.
"""
import json

import pytest
import responses

from tests.providers.wire import (ANTHROPIC_URL, GEMINI_BASE, OPENAI_URL, anthropic_message, gemini_response,
                                  openai_completion, openai_error)

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
GEMINI_FLASH = GEMINI_BASE + "gemini-2.5-flash:generateContent"
SECRET = "sk-test-openai-SECRET"


@pytest.fixture
def gw(make_app):
    """(client, app) with the failover manager's sleeps recorded instead of slept."""
    from tests.providers.test_failover import quiet

    def factory(**env):
        client, manager = quiet(make_app, **env)
        return client, client.application
    return factory


from tests.providers.test_failover import chat  # noqa: E402 - one helper for both suites


# 1 ------------------------------------------------------------ tool_choice.function not an object -> 500
@responses.activate
def test_tool_choice_function_as_string_is_a_400_not_a_500(gw):
    client, _ = gw()
    body = {**BODY, "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": "f"}}
    resp = chat(client, body)
    assert resp.status_code == 400, resp.get_json()


# 2 ------------------------------------------------------------ Gemini input_audio without format -> 500
@responses.activate
def test_gemini_input_audio_without_format_is_a_400_not_a_500(gw):
    client, _ = gw()
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA"}}]}]}
    resp = chat(client, body)
    assert resp.status_code == 400, resp.get_json()


@responses.activate
def test_gemini_file_part_not_an_object_is_a_400_not_a_500(gw):
    client, _ = gw()
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "file", "file": "x"}]}]}
    resp = chat(client, body)
    assert resp.status_code == 400, resp.get_json()


# 3 ------------------------------------------------------------ image URL with an over-long DNS label -> 500
@responses.activate
def test_gemini_image_url_with_bad_hostname_is_a_400_not_a_500(gw):
    client, _ = gw()
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://" + "a" * 64 + ".example.com/cat.png"}}]}]}
    resp = chat(client, body)
    assert resp.status_code == 400, resp.get_json()


# 4 ------------------------------------------------------------ context-fallback cycle is unbounded
@responses.activate
def test_a_context_chain_cycle_is_bounded(gw, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[models."gpt-4o-mini"]\ncontext_fallbacks = ["gpt-4.1-mini"]\n'
                   '[models."gpt-4.1-mini"]\ncontext_fallbacks = ["gpt-4o-mini"]\n')
    client, _ = gw(GATEWAY_CONFIG=str(cfg))
    calls = []

    def cb(request):
        calls.append(1)
        if len(calls) < 40:  # safety valve so the test terminates
            return 400, {}, json.dumps(openai_error(400, "This model's maximum context length is 128000 tokens.",
                                                    "invalid_request_error", "context_length_exceeded"))
        return 200, {}, json.dumps(openai_completion())
    responses.add_callback(responses.POST, OPENAI_URL, callback=cb)
    resp = chat(client)
    assert len(calls) <= 8, f"{len(calls)} upstream calls; final status {resp.status_code}"


# 5 ------------------------------------------------------------ provider key leaks in a mid-stream error
def _events(resp):
    return [line[6:] for line in resp.get_data(as_text=True).split("\n\n") if line]


@responses.activate
def test_a_mid_stream_error_never_carries_the_provider_key(gw):
    client, app = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    ch = lambda d, f=None: {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",  # noqa: E731
                            "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]}
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in [
        ch({"role": "assistant", "content": ""}), ch({"content": "Hi"}),
        {"error": {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error"}}])
    responses.post(OPENAI_URL, body=sse.encode(), content_type="text/event-stream", stream=True)
    rows = []
    app.extensions["gateway"].log_writer.enqueue = rows.append
    resp = chat(client, {**BODY, "stream": True})
    text = resp.get_data(as_text=True)
    assert SECRET not in text, text
    assert SECRET not in json.dumps(rows, default=str)


@responses.activate
def test_an_http_error_never_carries_the_provider_key(gw):
    """Control: the same message on an HTTP error IS redacted."""
    client, _ = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    responses.post(OPENAI_URL, json=openai_error(400, f"Incorrect API key provided: {SECRET}",
                                                 "invalid_request_error"), status=400)
    resp = chat(client, {**BODY, "stream": True})
    assert SECRET not in resp.get_data(as_text=True)


# 6 ------------------------------------------------------------ a probe that raises leaves the breaker wedged
@responses.activate
def test_a_probe_that_raises_does_not_exclude_the_model_for_ever(gw):
    client, app = gw(GATEWAY_BREAKER_FAILURES="1", GATEWAY_BREAKER_COOLDOWN="30")
    breakers = app.extensions["gateway"].manager.breakers
    now = [1000.0]
    breakers.clock = lambda: now[0]
    body = {**BODY, "model": "claude-haiku-4-5"}
    responses.post(ANTHROPIC_URL, json={"type": "error", "error": {"type": "api_error", "message": "x"}},
                          status=500)
    responses.post(OPENAI_URL, json=openai_completion())
    assert chat(client, body).headers["X-Provider"] == "openai"     # breaker opens
    now[0] += 31                                                     # half-open: next request probes
    responses.replace(responses.POST, ANTHROPIC_URL, json=[])        # a 200 whose JSON is not an object
    probe = chat(client, body)
    # A 200 whose body is not an object is a malformed answer: fail over, never a 500.
    assert probe.status_code == 200 and probe.headers["X-Provider"] == "openai"
    responses.replace(responses.POST, ANTHROPIC_URL, json=anthropic_message())
    now[0] += 31                    # the failed probe re-opened the breaker: after its cool-down, a new probe
    before = len([c for c in responses.calls if c.request.url == ANTHROPIC_URL])
    for _ in range(3):
        chat(client, body)
    after = len([c for c in responses.calls if c.request.url == ANTHROPIC_URL])
    assert after > before, f"anthropic never asked again; breaker={breakers.status('claude-haiku-4-5')}"


# 7 ------------------------------------------------------------ n=2 stream cut after choice 0 finished
def _ch(d, f=None, i=0):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": f}]}


@responses.activate
def test_an_n2_stream_cut_before_the_second_choice_finishes_is_not_a_clean_end(gw):
    client, app = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    events = [_ch({"role": "assistant", "content": ""}, i=0), _ch({"content": "A"}, i=0),
              _ch({"role": "assistant", "content": ""}, i=1), _ch({"content": "B-partial"}, i=1),
              _ch({}, "stop", i=0)]  # choice 1 never finishes; no [DONE]: the connection just ends
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    responses.post(OPENAI_URL, body=sse.encode(), content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True, "n": 2})
    data = _events(resp)
    assert data[-1] != "[DONE]", data


@responses.activate
def test_an_n2_stream_that_only_ever_produced_one_choice_is_not_cached(gw):
    client, app = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    events = [_ch({"role": "assistant", "content": ""}, i=0), _ch({"content": "A"}, i=0), _ch({}, "stop", i=0)]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events)  # cut: choice 1 never came, no [DONE]
    responses.post(OPENAI_URL, body=sse.encode(), content_type="text/event-stream", stream=True)
    body = {**BODY, "stream": True, "n": 2}
    client.post("/v1/chat/completions", json=body).get_data()
    import time; time.sleep(0.3)  # set_async
    second = client.post("/v1/chat/completions", json={**body, "stream": False})
    assert second.headers.get("X-Cache-Hit") != "exact" or len(second.get_json()["choices"]) == 2, \
        second.get_json()


# 8 ------------------------------------------------------------ unknown price: header says 0, body says null
@responses.activate
def test_no_price_header_and_body_agree(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_completion())
    resp = chat(client, {**BODY, "model": "openai/some-new-model"})
    assert resp.status_code == 200
    assert resp.get_json()["cost_usd"] is None
    assert "X-Cost-USD" not in resp.headers   # no price: no header, rather than a false zero


# 9 ------------------------------------------------------------ streamed answer cached without logprobs
@responses.activate
def test_a_logprobs_request_is_not_served_from_a_cache_entry_without_them(gw):
    client, _ = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}], "refusal": None}
    ev = [{**_ch({"role": "assistant", "content": ""})},
          {**_ch({"content": "Hi"}), "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": lp,
                                                   "finish_reason": None}]},
          _ch({}, "stop"),
          {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
           "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in ev) + "data: [DONE]\n\n"
    up = responses.post(OPENAI_URL, body=sse.encode(), content_type="text/event-stream", stream=True)
    body = {**BODY, "logprobs": True}
    client.post("/v1/chat/completions", json={**body, "stream": True}).get_data()
    responses.post(OPENAI_URL, json={**openai_completion(), "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "logprobs": lp, "finish_reason": "stop"}]})
    up = responses.calls
    plain = client.post("/v1/chat/completions", json=body)
    assert len(up) == 2 and "X-Cache-Hit" not in plain.headers
    assert plain.get_json()["choices"][0]["logprobs"] == lp


# 10 ----------------------------------------------------------- a client that goes away mid-stream
@responses.activate
def test_client_disconnect_mid_stream_releases_lock_and_logs(gw):
    client, app = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    from tests.providers.wire import openai_stream
    responses.post(OPENAI_URL, body=openai_stream(["a", "b", "c"]), content_type="text/event-stream", stream=True)
    rows = []
    gwx = app.extensions["gateway"]
    gwx.log_writer.enqueue = rows.append
    resp = client.post("/v1/chat/completions", json={**BODY, "stream": True}, buffered=False)
    it = iter(resp.response)
    next(it)
    resp.close()
    locks = [k for k in gwx.cache.backend._items if "lock" in k]
    assert rows and rows[0]["status_code"] == 499 and not locks


# 13 ----------------------------------------------------------- breaker keys ignore GATEWAY_REDIS_PREFIX
@responses.activate
def test_breaker_keys_live_under_the_redis_prefix(gw, redis_url, redis_prefix):
    import redis as r
    responses.add_passthru("http://127.0.0.1")
    client, app = gw(REDIS_URL=redis_url, GATEWAY_REDIS_PREFIX=redis_prefix, GATEWAY_BREAKER_FAILURES="1",
                     ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    chat(client)
    rc = r.Redis.from_url(redis_url)
    stray = [k for k in rc.scan_iter(match="gw:breaker:*")]
    mine = [k for k in rc.scan_iter(match=redis_prefix + "breaker:*")]
    for k in stray:
        rc.delete(k)
    assert mine and not stray


# 14 ----------------------------------------------------------- client-chosen model names become metric labels
@responses.activate
def test_unknown_model_names_do_not_become_metric_series(gw):
    import secrets
    from gateway import metrics
    client, app = gw()
    names = [f"junk-{secrets.token_hex(8)}" for _ in range(5)]
    for n in names:
        assert chat(client, {**BODY, "model": n}).status_code == 404
    text = metrics.render(app.extensions["gateway"]).decode()
    leaked = [n for n in names if n in text]
    assert not leaked, leaked


# 15 ----------------------------------------------------------- deep (but parseable) JSON: 500 from the cache key
@responses.activate
def test_a_deeply_nested_extra_field_is_not_a_500(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_completion())
    raw = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"prediction_x":' + "[" * 300 + "]" * 300 + "}"
    resp = client.post("/v1/chat/completions", data=raw, content_type="application/json")
    assert resp.status_code != 500


# 16 ----------------------------------------------------------- gemini: tool schema with a non-string type -> 500
@responses.activate
def test_gemini_tool_schema_with_a_numeric_type_is_not_a_500(gw):
    client, _ = gw()
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"a": {"type": 5}}}}}]}
    resp = chat(client, body)
    assert resp.status_code != 500


# 17 ----------------------------------------------------------- response_format schema not an object -> 500
@responses.activate
@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gemini-2.5-flash"])
def test_response_format_schema_list_is_not_a_500(gw, model):
    client, _ = gw()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}}
    resp = chat(client, body)
    assert resp.status_code != 500


# 18 ----------------------------------------------------------- image download ignores GATEWAY_DEADLINE
def test_a_slow_image_download_is_bounded_by_the_deadline(gw):
    import http.server, threading, time
    from tests.conftest import free_port

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "15")
            self.end_headers()
            for _ in range(15):
                self.wfile.write(b"x"); self.wfile.flush(); time.sleep(0.3)

        def log_message(self, *a):
            pass
    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Drip)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    client, _ = gw(GATEWAY_DEADLINE="1", GATEWAY_FETCH_PRIVATE_URLS="true", OPENAI_API_KEY=None,
                   ANTHROPIC_API_KEY=None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(f"http://127.0.0.1:{port}")
        mock.post(GEMINI_FLASH, json=gemini_response())
        body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{port}/a.png"}}]}]}
        start = time.monotonic()
        resp = chat(client, body)
        elapsed = time.monotonic() - start
    srv.shutdown()
    assert resp.status_code == 400 and "took too long" in resp.get_json()["error"]["message"]
    assert elapsed < 2, f"{elapsed:.1f}s with GATEWAY_DEADLINE=1"
