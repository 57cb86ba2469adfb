"""Issue 4, non-streaming calls: real faults from the simulator, over real sockets, through gunicorn + gevent.

One gateway serves the whole module (same env); the simulator is reset before each test. Each test
asserts status, routing headers, the answering model, the text against a healthy answer, the exact
upstream attempts and a wall-clock bound (see tests/integration/faults.py).
"""
import json

import pytest

from tests.integration.faults import (CLAUDE, CLAUDE_MODEL, FAST_ENV, GEMINI, GPT, QUICK, SLACK, TIMEOUT, Sim,
                                      assert_logged, assert_served, chat, log_row)

CLAUDE_ALIAS = "anthropic:claude-haiku-4-5"   # `claude-haiku-4-5` is sent upstream as asked


@pytest.fixture(scope="module")
def gw(start_module_gateway, simulator, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("faults-calls") / "gateway.toml"
    # A context-length chain on one model only, so the same gateway also shows the case without one.
    cfg.write_text('[models."gpt-4.1-mini"]\ncontext_fallbacks = ["gemini-2.5-flash"]\n')
    return start_module_gateway(simulator, GATEWAY_CONFIG=str(cfg), **FAST_ENV)


@pytest.fixture
def sim(simulator):
    return Sim(simulator)


@pytest.fixture
def prompt(request):
    return f"Fault drill {request.node.name}: tell me something"   # one conversation per test


def test_a_healthy_call_is_answered_by_the_requested_model(gw, sim, prompt):
    expected = sim.arm(prompt)
    res = chat(gw, prompt)
    assert_served(res, "openai", "gpt-4o-mini")
    assert res.text == expected and len(expected.split()) == 12
    assert res.usage["completion_tokens"] == 12
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- 429

def test_429_with_a_short_retry_after_waits_it_and_retries_the_same_model(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=429,retry_after=1", None, 1))
    res = chat(gw, prompt)
    assert_served(res, "openai", "gpt-4o-mini")
    assert res.text == expected
    assert sim.attempts() == {GPT: 2}
    assert 1.0 <= res.elapsed < 1.0 + SLACK


def test_429_with_a_short_retry_after_twice_retries_once_then_fails_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=429,retry_after=1"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert 1.0 <= res.elapsed < 1.0 + SLACK


@pytest.mark.parametrize("fault", ["status:code=429", "status:code=429,retry_after=5"],
                         ids=["no-retry-after", "retry-after-over-the-cap"])
def test_429_without_a_usable_retry_after_fails_over_at_once(gw, sim, prompt, fault):
    expected = sim.arm(prompt, ("openai", fault))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert res.usage["completion_tokens"] == 12    # the answering model's usage
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- 5xx, refused, reset

def test_500_once_is_retried_on_the_same_model_quickly(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=500", None, 1))
    res = chat(gw, prompt)
    assert_served(res, "openai", "gpt-4o-mini")
    assert res.text == expected
    assert sim.attempts() == {GPT: 2}
    assert res.elapsed < QUICK


def test_persistent_503_is_retried_once_then_failed_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=503"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert res.elapsed < QUICK
    row = log_row(res)
    assert [(a["model"], a["status"], a["reason"]) for a in json.loads(row.attempts)] == \
        [("gpt-4o-mini", 503, "http5xx")] * 2
    assert (row.provider, row.original_provider, row.cost_usd is not None) == ("anthropic", "openai", True)


def test_anthropic_529_is_retried_once_then_failed_over_to_openai(gw, sim, prompt):
    expected = sim.arm(prompt, ("anthropic", "status:code=529"))
    res = chat(gw, prompt, model="claude-haiku-4-5")
    assert_served(res, "openai", "gpt-4o-mini", failover=True, original="anthropic")
    assert res.text == expected
    assert sim.attempts() == {CLAUDE_ALIAS: 2, GPT: 1}
    assert res.elapsed < QUICK


def test_anthropic_529_once_is_retried_on_the_same_model(gw, sim, prompt):
    expected = sim.arm(prompt, ("anthropic", "status:code=529", None, 1))
    res = chat(gw, prompt, model="claude-haiku-4-5")
    assert_served(res, "anthropic", "claude-haiku-4-5")
    assert res.text == expected
    assert sim.attempts() == {CLAUDE_ALIAS: 2}
    assert res.elapsed < QUICK


def test_a_reset_before_any_byte_is_retried_once_then_failed_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "reset"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert res.elapsed < QUICK


def test_a_reset_once_is_absorbed_by_the_retry(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "reset", None, 1))
    res = chat(gw, prompt)
    assert_served(res, "openai", "gpt-4o-mini")
    assert res.text == expected
    assert sim.attempts() == {GPT: 2}
    assert res.elapsed < QUICK


def test_a_body_cut_short_is_retried_once_then_failed_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "cut"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert res.elapsed < QUICK


def test_a_body_that_is_not_json_is_retried_once_then_failed_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "malformed"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 2, CLAUDE: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- silence

def test_a_silent_upstream_fails_over_after_one_read_timeout_and_is_never_retried(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "hang"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK


def test_an_answer_slower_than_the_read_timeout_fails_over_after_one_timeout(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "slow_first:ms=3000"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert TIMEOUT <= res.elapsed < TIMEOUT + SLACK


def test_a_slow_answer_inside_the_read_timeout_is_simply_waited_for(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "slow_first:ms=400"))
    res = chat(gw, prompt)
    assert_served(res, "openai", "gpt-4o-mini")
    assert res.text == expected
    assert sim.attempts() == {GPT: 1}
    assert 0.4 <= res.elapsed < 0.4 + QUICK


# ---------------------------------------------------------------- the client's own errors

@pytest.mark.parametrize("code", [400, 404, 413, 422])
def test_a_client_error_is_returned_at_once_without_retry_or_failover(gw, sim, prompt, code):
    sim.arm(prompt, ("openai", f"status:code={code}"))
    res = chat(gw, prompt)
    assert res.status == code
    assert res.headers["X-Provider"] == "openai"
    assert "X-Original-Provider" not in res.headers
    assert res.body["error"]["message"]
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


def test_a_context_length_error_without_a_context_chain_is_returned_at_once(gw, sim, prompt):
    sim.arm(prompt, ("openai", "context_length"))
    res = chat(gw, prompt)
    assert res.status == 400
    assert res.headers["X-Provider"] == "openai"
    assert res.body["error"]["code"] == "context_length_exceeded"
    assert "maximum context length" in res.body["error"]["message"]
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


def test_a_context_length_error_goes_to_the_context_chain_when_one_is_configured(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "context_length"))
    res = chat(gw, prompt, model="gpt-4.1-mini")
    assert_served(res, "gemini", "gemini-2.5-flash", failover=True)
    assert res.text == expected
    assert sim.attempts() == {"openai:gpt-4.1-mini": 1, GEMINI: 1}   # the ordinary chain (Claude) is skipped
    assert res.elapsed < QUICK


def test_an_openai_content_policy_rejection_is_returned_after_exactly_one_attempt(gw, sim, prompt):
    sim.arm(prompt, ("openai", "content_policy"))
    res = chat(gw, prompt)
    assert res.status == 400
    assert res.headers["X-Provider"] == "openai"
    assert res.body["error"]["code"] == "content_policy_violation"
    assert "safety system" in res.body["error"]["message"]
    assert sim.attempts() == {GPT: 1}
    assert res.elapsed < QUICK


def test_an_anthropic_refusal_is_returned_as_content_filter_after_exactly_one_attempt(gw, sim, prompt):
    sim.arm(prompt, ("anthropic", "content_policy"))
    res = chat(gw, prompt, model="claude-haiku-4-5")
    assert_served(res, "anthropic", "claude-haiku-4-5")
    assert res.body["choices"][0]["finish_reason"] == "content_filter"
    assert res.text == ""
    assert sim.attempts() == {CLAUDE_ALIAS: 1}
    assert res.elapsed < QUICK


def test_a_gemini_blocked_prompt_is_returned_after_exactly_one_attempt(gw, sim, prompt):
    sim.arm(prompt, ("gemini", "content_policy"))
    res = chat(gw, prompt, model="gemini-2.5-flash")
    assert res.status == 400
    assert res.headers["X-Provider"] == "gemini"
    assert res.body["error"]["code"] == "content_filter"
    assert sim.attempts() == {GEMINI: 1}
    assert res.elapsed < QUICK


def test_a_fallback_that_cannot_express_the_request_is_passed_over_for_the_next(gw, sim, prompt):
    # n=2 is valid for gpt-4o-mini and Gemini; Claude answers one choice per request, which the gateway
    # itself refuses to translate. That refusal must not reach the client as its own 400.
    expected = sim.arm(prompt, ("openai", "status:code=503"))
    res = chat(gw, prompt, n=2)
    assert_served(res, "gemini", "gemini-2.5-flash", failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 2, GEMINI: 1}       # Claude is never called
    _, attempts = assert_logged(res)
    assert [(a["model"], a["reason"], a.get("skipped", False)) for a in attempts] == \
        [("gpt-4o-mini", "http5xx", False), ("gpt-4o-mini", "http5xx", False), (CLAUDE_MODEL, "incompatible", True)]
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- our own key

def test_an_upstream_401_fails_over_and_is_logged_loudly(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "bad_key"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert res.elapsed < QUICK
    log = gw.log()
    assert "PROVIDER CREDENTIALS REJECTED" in log and "SECRET" not in log


def test_an_upstream_403_fails_over(gw, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=403"))
    res = chat(gw, prompt)
    assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
    assert res.text == expected
    assert sim.attempts() == {GPT: 1, CLAUDE: 1}
    assert res.elapsed < QUICK


# ---------------------------------------------------------------- everything down

ALL_THREE = ("openai/gpt-4o-mini", "anthropic/claude-haiku-4-5-20251001", "gemini/gemini-2.5-flash")


def test_every_provider_failing_is_a_502_naming_each_one_tried(gw, sim, prompt):
    sim.arm(prompt, (None, "status:code=500"))
    res = chat(gw, prompt)
    assert res.status == 502
    assert res.headers["X-Provider"] == "gemini"          # the last one tried
    err = res.body["error"]
    assert err["code"] == "all_providers_failed"
    assert all(name in err["message"] for name in ALL_THREE)
    assert sim.attempts() == {GPT: 2, CLAUDE: 2, GEMINI: 2}
    assert res.elapsed < QUICK


def test_every_provider_overloaded_is_a_503_naming_each_one_tried(gw, sim, prompt):
    sim.arm(prompt, ("openai", "status:code=503"), ("anthropic", "status:code=529"), ("gemini", "status:code=429"))
    res = chat(gw, prompt)
    assert res.status == 503
    err = res.body["error"]
    assert err["code"] == "all_providers_unavailable"
    assert all(name in err["message"] for name in ALL_THREE)
    assert sim.attempts() == {GPT: 2, CLAUDE: 2, GEMINI: 1}   # a 429 without Retry-After is not retried
    assert res.elapsed < QUICK


def test_every_provider_silent_is_a_clear_error_after_one_timeout_each(gw, sim, prompt):
    sim.arm(prompt, (None, "hang"))
    res = chat(gw, prompt)
    assert res.status == 502
    err = res.body["error"]
    assert err["code"] == "all_providers_failed"
    assert all(name in err["message"] for name in ALL_THREE)
    assert "timeout" in err["message"]
    assert sim.attempts() == {GPT: 1, CLAUDE: 1, GEMINI: 1}
    assert 3 * TIMEOUT <= res.elapsed < 3 * TIMEOUT + SLACK


def test_an_error_response_carries_the_routing_headers_too(gw, sim, prompt):
    sim.arm(prompt, (None, "status:code=500"))
    res = chat(gw, prompt)
    assert res.status == 502
    assert res.headers["X-Failover"] == "true"        # a failover was tried
    assert "X-Model" in res.headers
