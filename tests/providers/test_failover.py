"""What each upstream failure triggers, with the providers' wire formats mocked by `responses`."""
import json
import logging

import httpx
import openai
import pytest
import requests
import responses

from tests.providers.wire import (ANTHROPIC_URL, GEMINI_BASE, OPENAI_URL, anthropic_error, anthropic_message,
                                  anthropic_stream, gemini_response, openai_completion, openai_error,
                                  openai_stream)

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
GEMINI_FLASH = GEMINI_BASE + "gemini-2.5-flash:generateContent"


def quiet(make_app, **env):
    """(client, the app's failover manager) with sleeps recorded instead of slept."""
    app, key = make_app(**env)
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    manager = app.extensions["gateway"].manager
    manager.slept = []
    manager.sleep = manager.slept.append
    return c, manager


@pytest.fixture
def gw(make_app):
    return lambda **env: quiet(make_app, **env)


def chat(client, body=BODY, **headers):
    # Identical requests repeat here: keep the cache out of the way.
    return client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-store", **headers})


@responses.activate
def test_429_with_a_short_retry_after_waits_and_retries_the_same_model(gw):
    client, manager = gw()
    responses.post(OPENAI_URL, json=openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded"),
                   status=429, headers={"Retry-After": "1"})
    responses.post(OPENAI_URL, json=openai_completion())
    resp = chat(client)
    assert resp.status_code == 200
    assert resp.headers["X-Provider"] == "openai" and resp.headers["X-Failover"] == "false"
    assert manager.slept == [1.0]
    assert len(responses.calls) == 2


@responses.activate
def test_429_with_a_long_retry_after_fails_over_at_once(gw):
    client, manager = gw()
    openai = responses.post(OPENAI_URL, json=openai_error(429, "Rate limit reached", "requests"), status=429,
                            headers={"Retry-After": "30"})
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200
    assert resp.headers["X-Provider"] == "anthropic" and resp.headers["X-Failover"] == "true"
    assert resp.headers["X-Original-Provider"] == "openai"
    assert resp.headers["X-Model"] == "claude-haiku-4-5-20251001"
    assert resp.get_json()["model"] == "claude-haiku-4-5-20251001"
    assert resp.get_json()["choices"][0]["message"]["content"] == "Hello from Claude."
    assert openai.call_count == 1 and manager.slept == []


@responses.activate
def test_500_once_is_retried_on_the_same_model_with_a_short_jittered_wait(gw):
    client, manager = gw()
    responses.post(OPENAI_URL, json=openai_error(500), status=500)
    responses.post(OPENAI_URL, json=openai_completion())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "openai"
    assert len(manager.slept) == 1 and 0 < manager.slept[0] <= 0.3


@responses.activate
def test_persistent_503_retries_once_then_fails_over(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, json=openai_error(503, "The engine is currently overloaded"), status=503)
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"
    assert openai.call_count == 2


@responses.activate
def test_an_answer_past_the_size_limit_is_failed_over_without_retry(gw):
    client, _ = gw(GATEWAY_MAX_RESPONSE_BYTES="65536")
    openai = responses.post(OPENAI_URL, json=openai_completion(text="x" * 70000))
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"
    assert openai.call_count == 1


@responses.activate
def test_anthropic_529_is_retried_then_failed_over(gw):
    client, _ = gw()
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_error(529, "overloaded_error", "Overloaded"),
                               status=529)
    openai = responses.post(OPENAI_URL, json=openai_completion())
    resp = chat(client, {**BODY, "model": "claude-haiku-4-5"})
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "openai"
    assert anthropic.call_count == 2 and openai.call_count == 1


@responses.activate
def test_a_reset_before_any_byte_is_retried_then_failed_over(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, body=requests.exceptions.ConnectionError("Connection reset by peer"))
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"
    assert openai.call_count == 2


@responses.activate
def test_a_timeout_fails_over_without_retrying_the_silent_route(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"
    assert openai.call_count == 1


@pytest.mark.parametrize("env, waited", [
    ({}, 300.0),                                                      # GATEWAY_ANSWER_TIMEOUT's default
    ({"GATEWAY_ANSWER_TIMEOUT": "250", "GATEWAY_READ_TIMEOUT": "7"}, 250.0),
    ({"GATEWAY_ANSWER_TIMEOUT": "900"}, 600.0),                       # never past GATEWAY_DEADLINE
    ({"GATEWAY_ANSWER_TIMEOUT": "900", "GATEWAY_DEADLINE": "200"}, 200.0),
])
@responses.activate
def test_a_non_streamed_answer_is_waited_for_as_long_as_the_answer_timeout_says(gw, env, waited):
    # It comes whole once generated; GATEWAY_READ_TIMEOUT (120 s, for the gaps in a stream) cut long ones off.
    client, _ = gw(**env)
    openai = responses.post(OPENAI_URL, json=openai_completion())
    assert chat(client).status_code == 200
    connect, read = openai.calls[0].request.req_kwargs["timeout"]
    assert connect == 5.0 and waited - 1 < read <= waited


@responses.activate
def test_a_client_error_is_returned_at_once_without_retry_or_failover(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, json=openai_error(400, "Invalid 'messages[0].content'.",
                                                          "invalid_request_error"), status=400)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 400
    assert resp.get_json()["error"]["message"] == "Invalid 'messages[0].content'."
    assert openai.call_count == 1 and anthropic.call_count == 0


@responses.activate
def test_a_content_policy_rejection_is_returned_after_exactly_one_attempt(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, json=openai_error(400, "Your request was rejected by our safety system.",
                                                          "invalid_request_error", "content_policy_violation"),
                            status=400)
    resp = chat(client)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "content_policy_violation"
    assert "safety system" in resp.get_json()["error"]["message"]
    assert openai.call_count == 1


@responses.activate
def test_a_context_length_error_goes_to_the_context_chain_when_configured(gw, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[models."gpt-4o-mini"]\ncontext_fallbacks = ["gemini-2.5-flash"]\n')
    client, _ = gw(GATEWAY_CONFIG=str(cfg))
    openai = responses.post(OPENAI_URL, json=openai_error(400, "This model's maximum context length is 128000 tokens.",
                                                          "invalid_request_error", "context_length_exceeded"),
                            status=400)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    gemini = responses.post(GEMINI_FLASH, json=gemini_response())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Model"] == "gemini-2.5-flash"
    assert openai.call_count == 1 and anthropic.call_count == 0 and gemini.call_count == 1


@responses.activate
def test_a_context_length_error_without_a_context_chain_is_returned(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(400, "This model's maximum context length is 128000 tokens.",
                                                 "invalid_request_error", "context_length_exceeded"), status=400)
    resp = chat(client)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "context_length_exceeded"


@responses.activate
def test_an_upstream_401_fails_over_and_is_logged_loudly(gw, caplog):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(401, "Incorrect API key provided: sk-test-openai-SECRET.",
                                                 "invalid_request_error", "invalid_api_key"), status=401)
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    with caplog.at_level(logging.ERROR, logger="gateway"):
        resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"
    assert any("CREDENTIALS REJECTED" in r.getMessage() for r in caplog.records)
    assert "SECRET" not in caplog.text


@responses.activate
def test_a_chain_skips_a_provider_with_no_key(gw):
    client, _ = gw(OPENAI_API_KEY=None)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "anthropic"
    assert anthropic.call_count == 1 and len(responses.calls) == 1


@responses.activate
def test_no_configured_provider_is_a_clear_503(gw):
    client, _ = gw(OPENAI_API_KEY=None, ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    resp = chat(client)
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "provider_not_configured"


@responses.activate
def test_failover_off_for_one_request(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 503 and anthropic.call_count == 0


@responses.activate
def test_a_per_request_chain_from_a_header(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    responses.post(GEMINI_FLASH, json=gemini_response())
    resp = chat(client, **{"X-Gateway-Fallbacks": "gemini-2.5-flash,claude-haiku-4-5"})
    assert resp.status_code == 200 and resp.headers["X-Model"] == "gemini-2.5-flash"
    assert anthropic.call_count == 0


def test_an_unknown_model_in_the_fallback_header_is_a_400(gw):
    client, _ = gw()
    resp = chat(client, **{"X-Gateway-Fallbacks": "nope-1"})
    assert resp.status_code == 400 and resp.get_json()["error"]["param"] == "X-Gateway-Fallbacks"


def every_provider_fails():
    responses.post(OPENAI_URL, json=openai_error(500), status=500)
    responses.post(ANTHROPIC_URL, json=anthropic_error(500), status=500)
    responses.post(GEMINI_FLASH, json={"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}},
                   status=500)


@responses.activate
def test_every_provider_failing_is_a_clear_error_naming_them(gw):
    client, _ = gw()
    every_provider_fails()
    resp = chat(client)
    assert resp.status_code == 502
    err = resp.get_json()["error"]
    assert err["code"] == "all_providers_failed"
    for name in ("openai/gpt-4o-mini", "anthropic/claude-haiku-4-5-20251001", "gemini/gemini-2.5-flash"):
        assert name in err["message"]
    assert len(responses.calls) == 6   # one retry each, bounded
    assert resp.headers["x-should-retry"] == "false"   # the SDK would walk the chain twice more
    # What the SDK decides on this response (openai-python's _should_retry reads x-should-retry first).
    sdk = openai.OpenAI(api_key="x", base_url="http://gateway/v1")
    assert sdk._should_retry(httpx.Response(502, headers=dict(resp.headers), content=resp.data)) is False


@responses.activate
def test_the_breaker_opens_then_probes_then_closes(gw):
    client, manager = gw(GATEWAY_BREAKER_FAILURES="2", GATEWAY_BREAKER_COOLDOWN="30")
    now = [1000.0]
    manager.breakers.clock = lambda: now[0]
    openai = responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    assert chat(client).headers["X-Provider"] == "anthropic"       # 2 failures: the breaker opens
    assert openai.call_count == 2
    for _ in range(3):                                              # open: OpenAI is not even tried
        assert chat(client).headers["X-Provider"] == "anthropic"
    assert openai.call_count == 2
    now[0] += 31                                                    # cool-down over: one probe
    responses.replace(responses.POST, OPENAI_URL, json=openai_completion())
    assert chat(client).headers["X-Provider"] == "openai"
    assert chat(client).headers["X-Provider"] == "openai"           # closed again
    assert manager.breakers.status("gpt-4o-mini") == "closed"


@responses.activate
def test_a_stream_that_fails_before_its_first_byte_fails_over_like_a_call(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(ANTHROPIC_URL, body=anthropic_stream(["Hello", " there", "!"]),
                   content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True})
    assert resp.status_code == 200 and resp.headers["X-Failover"] == "true"
    data = [line[6:] for line in resp.get_data(as_text=True).split("\n\n") if line]
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])
    assert text == "Hello there!"


@responses.activate
def test_a_stream_cut_midway_is_continued_with_a_prefill_and_no_text_lost(gw):
    client, _ = gw()
    calls = []

    def anthropic(request):
        body = json.loads(request.body)
        calls.append(body)
        if len(calls) == 1:
            return 200, {"Content-Type": "text/event-stream"}, anthropic_stream(["The quick", " brown fox "], complete=False)
        return 200, {"Content-Type": "text/event-stream"}, anthropic_stream([" jumps", " over."])
    responses.add_callback(responses.POST, ANTHROPIC_URL, callback=anthropic)
    resp = chat(client, {**BODY, "model": "claude-haiku-4-5", "stream": True})
    data = [line[6:] for line in resp.get_data(as_text=True).split("\n\n") if line]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "The quick brown fox jumps over."
    assert [c["choices"][0]["delta"].get("role") for c in chunks].count("assistant") == 1
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert calls[1]["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "The quick brown fox"}]} \
        or calls[1]["messages"][-1]["content"] == "The quick brown fox"


@responses.activate
def test_a_cut_stream_no_model_can_continue_ends_with_an_error_not_a_clean_stop(gw):
    client, _ = gw(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    responses.post(OPENAI_URL, body=openai_stream(["Partial", " answer"], complete=False),
                   content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True})
    data = [line[6:] for line in resp.get_data(as_text=True).split("\n\n") if line]
    assert "[DONE]" not in data
    assert "error" in json.loads(data[-1])
    assert not any(json.loads(d).get("choices") and json.loads(d)["choices"][0].get("finish_reason") == "stop"
                   for d in data[:-1])


@responses.activate
def test_a_cut_json_mode_stream_is_not_continued_with_a_prefill(gw):
    """Claude answers JSON mode through a forced tool and starts a new object, whatever the prefill: continued,
    the client got `{"title": "ab` and then a whole other object, with finish_reason "stop"."""
    client, _ = gw()
    responses.post(OPENAI_URL, body=openai_stream(['{"title": ', '"ab'], complete=False),
                   content_type="text/event-stream", stream=True)
    anthropic = responses.post(ANTHROPIC_URL, body=anthropic_stream(['{"title": "x"}']),
                               content_type="text/event-stream", stream=True)
    body = {**BODY, "stream": True, "response_format": {"type": "json_object"}}
    data = [line[6:] for line in chat(client, body).get_data(as_text=True).split("\n\n") if line]
    assert "[DONE]" not in data and "error" in json.loads(data[-1])
    assert not any(c["choices"][0].get("finish_reason") for c in map(json.loads, data[:-1]) if c.get("choices"))
    assert anthropic.call_count == 0


@responses.activate
def test_a_json_mode_stream_cut_before_any_text_is_answered_whole_by_the_next_model(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, body=openai_stream([], complete=False), content_type="text/event-stream",
                   stream=True)
    responses.post(ANTHROPIC_URL, body=anthropic_stream(['{"title": "x"}']), content_type="text/event-stream",
                   stream=True)
    body = {**BODY, "stream": True, "response_format": {"type": "json_object"}}
    data = [line[6:] for line in chat(client, body).get_data(as_text=True).split("\n\n") if line]
    assert data[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, data[:-1])
                   if c.get("choices")) == '{"title": "x"}'


# ---------------------------------------------------------------- fixes found by tests/integration/test_faults_*

@responses.activate
def test_the_failure_that_opens_the_breaker_is_not_retried(gw):
    client, manager = gw(GATEWAY_BREAKER_FAILURES="3")
    openai = responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(ANTHROPIC_URL, json=anthropic_message())
    assert chat(client).headers["X-Provider"] == "anthropic"
    assert openai.call_count == 2                     # 2 failures: closed, so the retry went
    assert chat(client).headers["X-Provider"] == "anthropic"
    assert openai.call_count == 3                     # the 3rd failure opened it: no retry into it
    assert manager.breakers.status("gpt-4o-mini") == "open"


@responses.activate
def test_a_half_open_fallback_is_not_left_probing_when_an_earlier_model_answers(gw):
    client, manager = gw(GATEWAY_BREAKER_FAILURES="1", GATEWAY_BREAKER_COOLDOWN="30")
    now = [1000.0]
    manager.breakers.clock = lambda: now[0]
    manager.breakers.failure("claude-haiku-4-5-20251001")      # Claude Haiku's breaker is open
    now[0] += 31                                                # ... and now half-open
    responses.post(OPENAI_URL, json=openai_completion())
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    assert chat(client).headers["X-Provider"] == "openai"       # Haiku is only gpt-4o-mini's fallback
    resp = chat(client, {**BODY, "model": "claude-haiku-4-5-20251001"})
    assert resp.headers["X-Provider"] == "anthropic" and resp.headers["X-Failover"] == "false"
    assert anthropic.call_count == 1
    assert manager.breakers.status("claude-haiku-4-5-20251001") == "closed"


def _probe_in_flight(gw):
    """A client whose gpt-4o-mini breaker is half open, its one probe slot held by another request."""
    client, manager = gw(GATEWAY_BREAKER_FAILURES="1", GATEWAY_BREAKER_COOLDOWN="30")
    now = [1000.0]
    manager.breakers.clock = lambda: now[0]
    manager.breakers.failure("gpt-4o-mini")
    now[0] += 31
    assert manager.breakers.allow("gpt-4o-mini")
    return client


@responses.activate
def test_a_half_open_model_whose_probe_is_in_flight_is_still_asked_when_nothing_else_can_be(gw):
    client = _probe_in_flight(gw)
    openai = responses.post(OPENAI_URL, json=openai_completion())
    resp = chat(client, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 200 and openai.call_count == 1


@responses.activate
def test_a_probe_answered_with_a_client_error_frees_the_probe_slot(gw):
    client, manager = gw(GATEWAY_BREAKER_FAILURES="1", GATEWAY_BREAKER_COOLDOWN="30")
    now = [1000.0]
    manager.breakers.clock = lambda: now[0]
    manager.breakers.failure("gpt-4o-mini")
    now[0] += 31
    responses.post(OPENAI_URL, json=openai_error(400, "Invalid request.", "invalid_request_error"), status=400)
    responses.post(OPENAI_URL, json=openai_completion())
    assert chat(client).status_code == 400                       # the probe: the client's fault
    resp = chat(client)                                          # the next request probes again
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "openai"
    assert manager.breakers.status("gpt-4o-mini") == "closed"


def _sse_events(resp):
    data = [line[6:] for line in resp.get_data(as_text=True).split("\n\n") if line]
    return data


@responses.activate
def test_a_continuation_keeps_the_id_the_client_already_has_usage_chunk_included(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, body=openai_stream(["The quick", " brown"], complete=False),
                   content_type="text/event-stream", stream=True)
    responses.post(ANTHROPIC_URL, body=anthropic_stream([" fox."]), content_type="text/event-stream", stream=True)
    resp = chat(client, {**BODY, "stream": True, "stream_options": {"include_usage": True}})
    data = _sse_events(resp)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        "The quick brown fox."
    assert {c["id"] for c in chunks} == {"chatcmpl-s"}           # OpenAI's id, as the first chunk had it
    assert {c["created"] for c in chunks} == {1}
    # Every attempt counted: Claude's 1 token, and OpenAI's "The quick brown" (cut before its usage chunk:
    # estimated as the larger of its 2 deltas and 15 characters / 4 rounded up).
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 1 + 4


@responses.activate
def test_malformed_events_are_counted_across_a_continuation(gw):
    _, manager = gw()
    broken = openai_stream(["The quick"], complete=False) + b"data: {not json\n\n"
    responses.post(OPENAI_URL, body=broken, content_type="text/event-stream", stream=True)
    responses.post(ANTHROPIC_URL, body=b"event: ping\ndata: {oops\n\n" + anthropic_stream([" fox."]),
                   content_type="text/event-stream", stream=True)
    model = manager.registry.resolve("gpt-4o-mini")
    stream, _ = manager.run({**BODY, "stream": True}, model, "chatcmpl-x", 1, stream=True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in stream if c["choices"])
    assert text == "The quick fox."
    assert stream.malformed == 2


@responses.activate
def test_a_fallback_rejecting_the_prefill_is_not_a_breaker_failure(gw):
    client, manager = gw(GATEWAY_BREAKER_FAILURES="1")
    responses.post(OPENAI_URL, body=openai_stream(["Partial"], complete=False),
                   content_type="text/event-stream", stream=True)
    responses.post(ANTHROPIC_URL, json=anthropic_error(400, "invalid_request_error", "This model does not "
                                                       "support assistant message prefill."), status=400)
    resp = chat(client, {**BODY, "stream": True})
    assert "error" in json.loads(_sse_events(resp)[-1])
    assert manager.breakers.status("claude-haiku-4-5-20251001") == "closed"
    assert manager.breakers.status("gpt-4o-mini") == "open"      # the cut itself does count


# ---------------------------------------------------------------- a fallback that cannot express the request
# The gateway's own refusal (raised by a translator before any call) from a model the client never asked for
# means "not this member", never the client's 400.

GEMINI_FLASH_STREAM = GEMINI_BASE + "gemini-2.5-flash:streamGenerateContent?alt=sse"
TWO_CHOICES = {**BODY, "n": 2}
AUDIO = {**BODY, "messages": [{"role": "user", "content": [
    {"type": "text", "text": "What is said here?"},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}


@pytest.mark.parametrize("body", [TWO_CHOICES, AUDIO], ids=["n=2", "input_audio"])
@responses.activate
def test_a_fallback_that_cannot_express_the_request_is_passed_over_for_the_next(gw, body):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, json=openai_error(503, "The engine is currently overloaded"), status=503)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    gemini = responses.post(GEMINI_FLASH, json=gemini_response())
    resp = chat(client, body)
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers["X-Model"] == "gemini-2.5-flash" and resp.headers["X-Failover"] == "true"
    assert resp.headers["X-Original-Provider"] == "openai"
    assert resp.get_json()["choices"][0]["message"]["content"] == "Hello from Gemini."
    assert openai.call_count == 2 and anthropic.call_count == 0 and gemini.call_count == 1


@responses.activate
def test_a_fallback_passed_over_is_recorded_as_incompatible_and_is_no_breaker_failure(gw):
    _, manager = gw(GATEWAY_BREAKER_FAILURES="1")
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(GEMINI_FLASH, json=gemini_response())
    model = manager.registry.resolve("gpt-4o-mini")
    _, outcome = manager.run(TWO_CHOICES, model, "chatcmpl-x", 1, stream=False)
    assert outcome.model.name == "gemini-2.5-flash" and outcome.failover_used
    assert [(a["model"], a["reason"]) for a in outcome.attempts] == [("gpt-4o-mini", "http5xx")]
    assert outcome.skipped == [{"provider": "anthropic", "model": "claude-haiku-4-5-20251001",
                                "reason": "incompatible",
                                "message": "This model returns one choice per request; n must be 1."}]
    assert manager.breakers.status("claude-haiku-4-5-20251001") == "closed"


@responses.activate
def test_every_fallback_unable_to_express_the_request_answers_with_the_first_models_failure(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, json=openai_error(503, "The engine is currently overloaded"), status=503,
                            headers={"Retry-After": "30"})
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client, TWO_CHOICES, **{"X-Gateway-Fallbacks": "claude-haiku-4-5,claude-sonnet-4-5"})
    assert resp.status_code == 503                  # OpenAI's overload, not a 400 from a model never asked for
    err = resp.get_json()["error"]
    assert err["message"].startswith("The engine is currently overloaded")
    assert "anthropic/claude-haiku-4-5 (This model returns one choice per request; n must be 1.)" in err["message"]
    assert "anthropic/claude-sonnet-4-5" in err["message"]
    assert resp.headers["X-Model"] == "gpt-4o-mini" and resp.headers["X-Failover"] == "false"
    assert resp.headers["Retry-After"] == "30"
    assert openai.call_count == 2 and anthropic.call_count == 0


@responses.activate
def test_every_fallback_unable_after_a_failover_keeps_the_class_of_the_real_failures(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    responses.post(GEMINI_FLASH, json={"error": {"code": 503, "message": "The model is overloaded.",
                                                 "status": "UNAVAILABLE"}}, status=503)
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    resp = chat(client, TWO_CHOICES, **{"X-Gateway-Fallbacks": "gemini-2.5-flash,claude-haiku-4-5"})
    assert resp.status_code == 503
    err = resp.get_json()["error"]
    assert err["code"] == "all_providers_unavailable"
    assert "openai/gpt-4o-mini (http5xx)" in err["message"] and "gemini/gemini-2.5-flash (http5xx)" in err["message"]
    assert "anthropic/claude-haiku-4-5 (This model returns one choice per request; n must be 1.)" in err["message"]
    assert resp.headers["X-Model"] == "gemini-2.5-flash"   # the last model asked, not the one passed over
    assert anthropic.call_count == 0
    assert "x-should-retry" not in resp.headers   # "unavailable, try later" stays the client's to retry


@responses.activate
def test_the_requested_model_refusing_the_request_is_still_the_clients_400(gw):
    client, _ = gw()
    openai = responses.post(OPENAI_URL, json=openai_completion())
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_message())
    gemini = responses.post(GEMINI_FLASH, json=gemini_response())
    resp = chat(client, {**TWO_CHOICES, "model": "claude-haiku-4-5"})
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["param"] == "n" and err["message"] == "This model returns one choice per request; n must be 1."
    assert resp.headers["X-Model"] == "claude-haiku-4-5" and resp.headers["X-Failover"] == "false"
    assert openai.call_count == anthropic.call_count == gemini.call_count == 0


@responses.activate
def test_a_stream_fails_over_past_a_fallback_that_cannot_express_it(gw):
    client, _ = gw()
    responses.post(OPENAI_URL, json=openai_error(503), status=503)
    anthropic = responses.post(ANTHROPIC_URL, body=anthropic_stream(["Hello"]), content_type="text/event-stream",
                               stream=True)
    responses.post(GEMINI_FLASH_STREAM, body=f"data: {json.dumps(gemini_response('Hello from Gemini.'))}\n\n",
                   content_type="text/event-stream", stream=True)
    resp = chat(client, {**TWO_CHOICES, "stream": True})
    assert resp.status_code == 200 and resp.headers["X-Model"] == "gemini-2.5-flash"
    data = _sse_events(resp)
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1]) == \
        "Hello from Gemini."
    assert anthropic.call_count == 0


@responses.activate
def test_a_half_open_requested_model_is_still_asked_when_no_fallback_can_express_the_request(gw):
    client = _probe_in_flight(gw)
    openai = responses.post(OPENAI_URL, json=openai_completion())
    resp = chat(client, TWO_CHOICES, **{"X-Gateway-Fallbacks": "claude-haiku-4-5"})
    assert resp.status_code == 200 and resp.headers["X-Model"] == "gpt-4o-mini"
    assert openai.call_count == 1


CREDIT = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade."
CLAUDE_BODY = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.mark.parametrize("status, type_, message", [
    (400, "invalid_request_error", CREDIT),       # what public reports show Anthropic sending
    (402, "billing_error", "Billing issue."),
])
@responses.activate
def test_an_upstream_account_out_of_credit_fails_over_and_is_logged_loudly(gw, caplog, status, type_, message):
    # The gateway's account, not the client's request: never its 400, and the fallbacks are tried.
    client, _ = gw()
    anthropic = responses.post(ANTHROPIC_URL, json=anthropic_error(status, type_, message), status=status)
    responses.post(OPENAI_URL, json=openai_completion())
    with caplog.at_level(logging.ERROR, logger="gateway"):
        resp = chat(client, CLAUDE_BODY)
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "openai"
    assert anthropic.call_count == 1
    assert any("PROVIDER ACCOUNT REFUSED" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url, answer", [
    (ANTHROPIC_URL, (400, anthropic_error(400, "invalid_request_error", CREDIT))),
    (GEMINI_BASE + "gemini-2.5-flash:generateContent",
     (400, {"error": {"code": 400, "message": "User location is not supported for the API use.",
                      "status": "FAILED_PRECONDITION"}})),
    (OPENAI_URL, (429, openai_error(429, "You exceeded your current quota, please check your plan and billing "
                                         "details.", "insufficient_quota", "insufficient_quota"))),
])
@responses.activate
def test_without_failover_an_account_refusal_is_a_502_naming_the_operators_account(gw, url, answer):
    client, _ = gw()
    status, body = answer
    responses.post(url, json=body, status=status)
    model = {ANTHROPIC_URL: "claude-haiku-4-5", OPENAI_URL: "gpt-4o-mini"}.get(url, "gemini-2.5-flash")
    resp = chat(client, {**CLAUDE_BODY, "model": model}, **{"X-Gateway-Failover": "off"})
    assert resp.status_code == 502
    assert resp.get_json()["error"]["code"] == "upstream_account_refused"
