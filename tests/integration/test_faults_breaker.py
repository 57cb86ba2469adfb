"""Issue 4: the circuit breaker, the request deadline, and the issue's two "done when" checks, through a
real gunicorn + gevent gateway and the provider simulator.

Breakers are per worker (no Redis here), so the tests that count upstream attempts exactly run on a
one-worker gateway; the load checks run on two workers. Each test uses models no other test in its
gateway touches, so no breaker state leaks from one test to the next.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.faults import (CLAUDE, CLAUDE_MODEL, FAST_ENV, GPT, QUICK, SLACK, TIMEOUT, Sim, assert_served,
                                      chat)

COOLDOWN = 2.0
THRESHOLD = 3
BREAKER_ENV = {**FAST_ENV, "GATEWAY_BREAKER_FAILURES": str(THRESHOLD), "GATEWAY_BREAKER_COOLDOWN": str(COOLDOWN)}
DEADLINE = 2.5
FAST = 0.25        # "without waiting for a timeout": a quarter of GATEWAY_READ_TIMEOUT


@pytest.fixture(scope="module")
def gw1(start_module_gateway, simulator):
    return start_module_gateway(simulator, workers=1, GATEWAY_DEADLINE=str(DEADLINE),
                                **{k: v for k, v in BREAKER_ENV.items() if k != "GATEWAY_DEADLINE"})


@pytest.fixture(scope="module")
def gw2(start_module_gateway, simulator):
    # A long cool-down: no half-open probe may land in the middle of a load check.
    return start_module_gateway(simulator, workers=2, **{**BREAKER_ENV, "GATEWAY_BREAKER_COOLDOWN": "30"})


@pytest.fixture
def sim(simulator):
    return Sim(simulator)


@pytest.fixture
def prompt(request):
    return f"Breaker drill {request.node.name}: tell me something"


def test_a_primary_down_for_a_while_opens_its_breaker_serves_from_the_fallback_then_closes(gw1, sim, prompt):
    expected = sim.arm(prompt, ("openai", "status:code=503", "gpt-4o-mini"))

    def ask(provider, model, failover, attempts, bound=QUICK):
        res = chat(gw1, prompt)
        assert_served(res, provider, model, failover)
        assert res.text == expected
        assert sim.attempts() == attempts
        assert res.elapsed < bound
        return res

    # Down: the first request retries once then fails over; the second one's first failure is the
    # third in a row, which opens the breaker, so it is not retried.
    ask("anthropic", CLAUDE_MODEL, True, {GPT: 2, CLAUDE: 1})
    ask("anthropic", CLAUDE_MODEL, True, {GPT: 3, CLAUDE: 2})
    opened = time.monotonic()
    # Open: OpenAI is not asked at all.
    for n in range(3):
        ask("anthropic", CLAUDE_MODEL, True, {GPT: 3, CLAUDE: 3 + n})
    # Cool-down over, still down: one probe request, one attempt, and the breaker opens again.
    time.sleep(max(0.0, opened + COOLDOWN + 0.2 - time.monotonic()))
    ask("anthropic", CLAUDE_MODEL, True, {GPT: 4, CLAUDE: 6})
    reopened = time.monotonic()
    ask("anthropic", CLAUDE_MODEL, True, {GPT: 4, CLAUDE: 7})
    # Recovered: still skipped until the cool-down ends, then the probe succeeds and the breaker closes.
    sim.clear_rules()
    ask("anthropic", CLAUDE_MODEL, True, {GPT: 4, CLAUDE: 8})
    time.sleep(max(0.0, reopened + COOLDOWN + 0.2 - time.monotonic()))
    ask("openai", "gpt-4o-mini", False, {GPT: 5, CLAUDE: 8})
    ask("openai", "gpt-4o-mini", False, {GPT: 6, CLAUDE: 8})


def test_a_recovered_fallback_is_probed_even_when_another_model_answered_meanwhile(gw1, sim, prompt):
    # Claude's breaker opens while Anthropic is down; after the cool-down a request that OpenAI answers
    # (Claude is only its fallback) must not leave Claude's probe slot taken, or Claude is never asked again.
    dated = "anthropic:claude-sonnet-4-5-20250929"
    expected = sim.arm(prompt, ("anthropic", "status:code=503", "claude-sonnet-4-5-20250929"))
    for n in (1, 2):
        res = chat(gw1, prompt, model="claude-sonnet-4-5-20250929")
        assert_served(res, "openai", "gpt-4o", failover=True, original="anthropic")
        assert res.text == expected
    assert sim.attempts() == {dated: 3, "openai:gpt-4o": 2}    # open after the third failure
    opened = time.monotonic()
    sim.clear_rules()
    time.sleep(max(0.0, opened + COOLDOWN + 0.2 - time.monotonic()))
    res = chat(gw1, prompt, model="gpt-4o")                      # Claude Sonnet is this one's fallback
    assert_served(res, "openai", "gpt-4o")
    res = chat(gw1, prompt, model="claude-sonnet-4-5-20250929")  # the probe: Anthropic is back
    assert_served(res, "anthropic", "claude-sonnet-4-5-20250929")
    assert res.text == expected
    assert sim.attempts() == {dated: 4, "openai:gpt-4o": 3}
    assert res.elapsed < QUICK


def test_the_deadline_bounds_the_whole_request_and_names_the_providers_tried(gw1, sim, prompt):
    # Every provider silent: OpenAI and Claude each cost a full read timeout, Gemini gets what is left.
    sim.arm(prompt, (None, "hang"))
    res = chat(gw1, prompt, model="gpt-4")
    assert res.status == 504
    assert res.headers["X-Provider"] == "gemini"
    err = res.body["error"]
    assert err["code"] == "deadline_exceeded"
    for name in ("openai/gpt-4", "anthropic/claude-opus-4-5-20251101", "gemini/gemini-2.5-pro"):
        assert name in err["message"]
    assert sim.attempts() == {"openai:gpt-4": 1, "anthropic:claude-opus-4-5-20251101": 1, "gemini:gemini-2.5-pro": 1}
    assert DEADLINE <= res.elapsed < DEADLINE + SLACK


# ---------------------------------------------------------------- "done when"

def test_done_when_100_concurrent_requests_all_succeed_through_anthropic_while_openai_429s(gw2, sim):
    prompts = [f"Concurrent request {i}: tell me something" for i in range(100)]
    expected = {p: sim.healthy_answer(p) for p in prompts}
    sim.reset()
    sim.rule("openai", "status:code=429")
    local = threading.local()

    def one(p):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return p, chat(gw2, p, session=local.session)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(one, prompts))
    wall = time.monotonic() - started
    for p, res in results:
        assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
        assert res.text == expected[p]                 # every client got its own answer, whole
    attempts = sim.attempts()
    assert attempts[CLAUDE] == 100
    assert 1 <= attempts[GPT] <= 100                   # a 429 without Retry-After is never retried
    assert set(attempts) == {GPT, CLAUDE}
    assert wall < 10
    print(f"\n100 concurrent, OpenAI 429: wall {wall:.2f} s, slowest {max(r.elapsed for _, r in results):.2f} s, "
          f"OpenAI attempts {attempts[GPT]} (the rest skipped by open breakers)")


def test_done_when_openai_hangs_requests_succeed_after_one_timeout_then_without_waiting(gw2, sim, prompt):
    expected = sim.arm(prompt, ("openai", "hang", "gpt-4.1-mini"))
    session = requests.Session()
    results = [chat(gw2, prompt, model="gpt-4.1-mini", session=session) for _ in range(12)]
    for res in results:
        assert_served(res, "anthropic", CLAUDE_MODEL, failover=True)
        assert res.text == expected
    latencies = [r.elapsed for r in results]
    slow = [t for t in latencies if t >= TIMEOUT]
    assert latencies[0] >= TIMEOUT                                   # the first waits for one timeout...
    assert all(t < TIMEOUT + SLACK for t in slow)                    # ...never for two
    assert THRESHOLD <= len(slow) <= THRESHOLD * 2                   # per-worker breakers, 2 workers
    assert all(t < FAST for t in latencies[-5:])                     # open: no timeout waited for
    assert sim.attempts() == {"openai:gpt-4.1-mini": len(slow), CLAUDE: 12}
    fast = [t for t in latencies if t < TIMEOUT]
    print(f"\nOpenAI hanging: {len(slow)} requests waited one timeout ({min(slow):.2f}-{max(slow):.2f} s), "
          f"then breaker open: {min(fast) * 1000:.0f}-{max(fast) * 1000:.0f} ms")
