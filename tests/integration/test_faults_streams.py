"""Issue 4, streams: real faults from the simulator, over real sockets, through gunicorn + gevent.

Up to the first byte a stream fails over like a call (the first event is read before the status and
headers are committed). After it, a stall or a cut is continued with the partial answer as a prefill,
on models that can continue one, so the client gets one whole answer; when nothing can continue, the
stream ends with an error event naming the original failure, never a clean stop and [DONE].
"""
import pytest

from tests.integration.faults import (CLAUDE, CLAUDE_MODEL, FAST_ENV, GEMINI, GPT, QUICK, SLACK, TIMEOUT, Sim,
                                      assert_broken_stream, assert_served, assert_whole_stream, chat)

CLAUDE_ALIAS = "anthropic:claude-haiku-4-5"


@pytest.fixture(scope="module")
def gw(start_module_gateway, simulator):
    return start_module_gateway(simulator, **FAST_ENV)


@pytest.fixture
def sim(simulator):
    return Sim(simulator)


@pytest.fixture
def prompt(request):
    return f"Stream drill {request.node.name}: tell me something"


def words(text, n):
    """The text of the first `n` content events: the simulator sends one word (with its leading space) each."""
    return " ".join(text.split(" ")[:n])


def models_seen(res):
    out = []
    for c in res.chunks:
        if not out or out[-1] != c["model"]:
            out.append(c["model"])
    return out


def test_a_healthy_stream_is_whole(gw, sim, prompt):
    expected = sim.arm(prompt)
    res = chat(gw, prompt, stream=True)
    assert_served(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- before the first byte: like a call

def test_429_with_a_short_retry_after_waits_it_and_retries_the_same_model(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=429,retry_after=1", None, 1))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 2}
    assert 1.0 <= res.elapsed < 1.0 + SLACK


@pytest.mark.parametrize("fault", ["status:code=429", "status:code=429,retry_after=5"],
                         ids=["no-retry-after", "retry-after-over-the-cap"])
def test_429_without_a_usable_retry_after_fails_over_before_the_first_byte(gw, sim, prompt, fault):
    expected = sim.arm(prompt, ("openai", fault))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert_whole_stream(res, expected)
    assert models_seen(res) == [CLAUDE_MODEL]
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert res.elapsed < QUICK


def test_500_once_is_retried_on_the_same_model(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=500", None, 1))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 2}
    assert res.elapsed < QUICK


def test_persistent_503_is_retried_once_then_failed_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=503"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert res.elapsed < QUICK


def test_anthropic_529_is_retried_once_then_failed_over_to_openai(gw, sim, prompt):
    expected = sim.arm(prompt, ("anthropic", "status:code=529"))
    res = chat(gw, prompt, model="claude-haiku-4-5", stream=True)
    assert_served(res, "openai", "gpt-4o-mini", failover=True, original="anthropic")
    assert_whole_stream(res, expected)
    assert sim.attempts() == {CLAUDE_ALIAS: 2, GPT: 1}
    assert res.elapsed < QUICK


def test_a_reset_before_the_headers_is_retried_once_then_failed_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "reset"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert res.elapsed < QUICK


def test_a_silent_upstream_fails_over_after_one_timeout_and_is_never_retried(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "hang"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK


def test_a_first_token_later_than_its_timeout_fails_over_after_one_timeout(gw, sim, prompt):
    # The upstream's headers (200) arrive at once; only its first event is late.
    expected = sim.arm(prompt, ("openai", "slow_first:ms=3000"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK


def test_a_slow_first_token_inside_its_timeout_is_simply_waited_for(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "slow_first:ms=400"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 1}
    assert 0.4 <= res.elapsed < 0.4 + QUICK


# ---------------------------------------------------------------- after bytes were sent: continue

def test_a_cut_openai_stream_is_continued_by_claude_with_a_prefill_and_nothing_lost(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "cut:after=4"))
    res = chat(gw, prompt, stream=True)
    # The headers went out with OpenAI's first event; the answer is finished by Claude.
    assert_served_headers(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert models_seen(res) == ["gpt-4o-mini", CLAUDE_MODEL]
    assert res.model == CLAUDE_MODEL
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}      # OpenAI cannot continue a prefill: not retried
    prefill = sim.last("anthropic", CLAUDE_MODEL)["body"]["messages"][-1]
    assert prefill == {"role": "assistant", "content": [{"type": "text", "text": words(expected, 4)}]}
    assert res.elapsed < QUICK


def test_a_cut_claude_stream_is_continued_by_the_same_model_first(gw, sim, prompt):
    expected = sim.arm(prompt, ("anthropic", "cut:after=5", None, 1))
    res = chat(gw, prompt, model="claude-haiku-4-5", stream=True)
    assert_served(res, "anthropic", "claude-haiku-4-5")
    assert_whole_stream(res, expected)
    assert models_seen(res) == ["claude-haiku-4-5"]
    assert sim.attempts() == {CLAUDE_ALIAS: 2}
    prefill = sim.last("anthropic", "claude-haiku-4-5")["body"]["messages"][-1]
    assert prefill == {"role": "assistant", "content": [{"type": "text", "text": words(expected, 5)}]}
    assert res.elapsed < QUICK


def test_a_stalled_openai_stream_is_continued_by_claude_after_one_read_timeout(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "stall:after=3"))
    res = chat(gw, prompt, stream=True)
    assert_served_headers(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert models_seen(res) == ["gpt-4o-mini", CLAUDE_MODEL]
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK


def test_a_claude_stream_cut_again_on_its_continuation_moves_down_the_chain(gw, sim, prompt):
    # Same model first (it cuts again, three words further), then the next model of the chain that can
    # continue a prefill: the client still gets every word exactly once.
    expected = sim.arm(prompt, ("anthropic", "cut:after=3", "claude-haiku-4-5"))
    res = chat(gw, prompt, model="claude-haiku-4-5", stream=True,
               headers={"X-Gateway-Fallbacks": "gpt-4o-mini,claude-sonnet-4-5"})
    assert_served_headers(res, "anthropic", "claude-haiku-4-5")
    assert_whole_stream(res, expected)
    assert models_seen(res) == ["claude-haiku-4-5", "claude-sonnet-4-5"]
    assert sim.attempts() == {CLAUDE_ALIAS: 2, "anthropic:claude-sonnet-4-5": 1}   # OpenAI cannot continue
    prefill = sim.last("anthropic", "claude-sonnet-4-5")["body"]["messages"][-1]
    assert prefill == {"role": "assistant", "content": [{"type": "text", "text": words(expected, 6)}]}
    assert res.elapsed < QUICK


def test_a_claude_stream_that_stalls_again_on_its_continuation_ends_with_the_stall_error(gw, sim, prompt):
    # Claude stalls twice (the stream, then its same-model continuation, three words further); nothing
    # after it in the chain can continue a prefill (OpenAI, Gemini): an error event naming the stall.
    expected = sim.arm(prompt, ("anthropic", "stall:after=3"))
    res = chat(gw, prompt, model="claude-haiku-4-5", stream=True)
    assert_served_headers(res, "anthropic", "claude-haiku-4-5")
    assert_broken_stream(res, expected)
    assert res.text == words(expected, 6)
    assert "stalled" in res.error["message"]
    assert sim.attempts() == {CLAUDE_ALIAS: 2}
    assert 2 * TIMEOUT <= res.elapsed < 2 * TIMEOUT + SLACK


def test_a_short_stall_inside_the_read_timeout_is_not_a_failure(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "stall:after=3,ms=400"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert sim.attempts() == {GPT: 1}
    assert 0.4 <= res.elapsed < 0.4 + QUICK


def test_a_mid_stream_error_event_is_continued_like_a_cut(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "error_event:after=6"))
    res = chat(gw, prompt, stream=True)
    assert_served_headers(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert models_seen(res) == ["gpt-4o-mini", CLAUDE_MODEL]
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert res.elapsed < QUICK


@pytest.mark.parametrize("provider,model,key", [("openai", "gpt-4o-mini", GPT),
                                                ("anthropic", "claude-haiku-4-5", CLAUDE_ALIAS),
                                                ("gemini", "gemini-2.5-flash", GEMINI)])
def test_a_malformed_event_is_skipped_and_the_answer_is_whole(gw, sim, prompt, provider, model, key):
    expected = sim.arm(prompt, (provider, "malformed:after=4"))
    res = chat(gw, prompt, model=model, stream=True)
    assert_served(res, provider, model)
    assert_whole_stream(res, expected)
    assert "oops" not in res.text
    assert sim.attempts() == {key: 1}
    assert res.elapsed < QUICK


def test_an_openai_stream_closed_cleanly_without_done_is_finalised_with_usage(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "no_done"))
    res = chat(gw, prompt, stream=True)
    assert_served(res, "openai", "gpt-4o-mini")
    assert_whole_stream(res, expected)
    assert res.usage["completion_tokens"] == 12
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


def test_an_anthropic_stream_closed_cleanly_without_message_stop_is_finalised_with_usage(gw, sim, prompt):
    expected = sim.arm(prompt, ("anthropic", "no_done"))
    res = chat(gw, prompt, model="claude-haiku-4-5", stream=True)
    assert_served(res, "anthropic", "claude-haiku-4-5")
    assert_whole_stream(res, expected)
    assert res.usage["completion_tokens"] == 12
    assert sim.attempts() == {CLAUDE_ALIAS: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- when nothing can continue

def test_a_fallback_that_rejects_the_prefill_ends_the_stream_with_the_original_error(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "cut:after=4"), ("anthropic", "reject_prefill"))
    res = chat(gw, prompt, stream=True)
    assert_served_headers(res, "openai", "gpt-4o-mini")
    assert_broken_stream(res, expected)
    assert res.text == words(expected, 4)
    assert "cut off" in res.error["message"] and "prefill" not in res.error["message"]
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert res.elapsed < QUICK


def test_a_cut_stream_with_failover_off_ends_with_an_error_not_a_clean_stop(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "cut:after=4"))
    res = chat(gw, prompt, stream=True, headers={"X-Gateway-Failover": "off"})
    assert_served_headers(res, "openai", "gpt-4o-mini")
    assert_broken_stream(res, expected)
    assert res.text == words(expected, 4)
    assert "cut off" in res.error["message"]
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- the client's own errors, and all down

def test_a_context_length_error_is_returned_at_once_as_json(gw, sim, prompt):
    sim.arm(prompt, ("openai", "context_length"))
    res = chat(gw, prompt, stream=True)
    assert res.status == 400 and res.body is not None
    assert res.headers["X-Provider"] == "openai"
    assert res.body["error"]["code"] == "context_length_exceeded"
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


def test_a_content_policy_rejection_is_returned_after_exactly_one_attempt(gw, sim, prompt):
    sim.arm(prompt, ("openai", "content_policy"))
    res = chat(gw, prompt, stream=True)
    assert res.status == 400 and res.body is not None
    assert res.headers["X-Provider"] == "openai"
    assert res.body["error"]["code"] == "content_policy_violation"
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


def test_an_anthropic_refusal_streams_content_filter_after_exactly_one_attempt(gw, sim, prompt):
    sim.arm(prompt, ("anthropic", "content_policy"))
    res = chat(gw, prompt, model="claude-haiku-4-5", stream=True)
    assert_served(res, "anthropic", "claude-haiku-4-5")
    assert res.done and res.error is None and res.text == ""
    assert res.finish_reasons == ["content_filter"]
    assert sim.attempts() == {CLAUDE_ALIAS: 1}
    assert res.elapsed < QUICK


def test_every_provider_failing_is_a_503_naming_each_one_before_any_byte(gw, sim, prompt):
    sim.arm(prompt, (None, "status:code=503"))
    res = chat(gw, prompt, stream=True)
    assert res.status == 503 and res.body is not None      # JSON, not an event stream
    err = res.body["error"]
    assert err["code"] == "all_providers_unavailable"
    for name in ("openai/gpt-4o-mini", "anthropic/claude-haiku-4-5-20251001", "gemini/gemini-2.5-flash"):
        assert name in err["message"]
    assert sim.attempts() == {GPT: 2, CLAUDE: 2, GEMINI: 2}
    assert res.elapsed < QUICK


def assert_served_headers(res, provider, model):
    """A stream whose headers were committed by `provider`/`model` before anything went wrong."""
    assert res.status == 200
    assert res.headers["Content-Type"].startswith("text/event-stream")
    assert res.headers["X-Provider"] == provider and res.headers["X-Model"] == model
    assert res.headers["X-Failover"] == "false" and "X-Original-Provider" not in res.headers
