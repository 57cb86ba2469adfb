"""Helpers for the fault suites (test_faults_*.py): arm the simulator, call the gateway, read the result.

Every fault test checks the same six things, so they live here once:
status, the routing headers, the answering model, the text against a healthy simulator's answer,
the upstream attempts (from /_sim/stats, as an exact {"provider:model": count} dict) and the wall clock.

The assert_* helpers also check the request's log row (status, failover, who answered, the failed
attempts with their reasons): the fault gateways write rows every 50 ms (GATEWAY_LOG_FLUSH_SECONDS).
"""
import dataclasses
import json
import time

import requests
from sqlalchemy import select

from gateway.extensions import make_engine
from gateway.store.models import gateway_logs

# The models the default chains walk, under the names the simulator counts them by (the upstream id).
GPT = "openai:gpt-4o-mini"
CLAUDE = "anthropic:claude-haiku-4-5-20251001"
GEMINI = "gemini:gemini-2.5-flash"
CLAUDE_MODEL = "claude-haiku-4-5-20251001"

# Env shared by the fault suites: small timeouts so the suite stays fast. The breaker is off here
# (a threshold no test reaches) so one test's failures never open a breaker for the next test on the
# same gateway; the breaker has its own suite.
FAST_ENV = {"GATEWAY_READ_TIMEOUT": "1", "GATEWAY_ANSWER_TIMEOUT": "1", "GATEWAY_FIRST_TOKEN_TIMEOUT": "1",
            "GATEWAY_CONNECT_TIMEOUT": "1",
            "GATEWAY_RETRY_BACKOFF": "0.05", "GATEWAY_BREAKER_COOLDOWN": "2",
            "GATEWAY_BREAKER_FAILURES": "1000000", "GATEWAY_DEADLINE": "20", "GATEWAY_LOG_FLUSH_SECONDS": "0.05"}
TIMEOUT = 1.0      # GATEWAY_READ_TIMEOUT = GATEWAY_ANSWER_TIMEOUT = GATEWAY_FIRST_TOKEN_TIMEOUT
QUICK = 0.8        # a bound for "no timeout was waited for": well below TIMEOUT, with room for a slow CI box
SLACK = 0.8        # what a request may take beyond the waits it must make


class Sim:
    """The simulator's control API."""

    def __init__(self, base):
        self.base = base

    def reset(self):
        requests.post(self.base + "/_sim/reset", timeout=5).raise_for_status()

    def rule(self, provider, fault, model=None, times=None):
        rule = {"provider": provider, "model": model, "fault": fault, "times": times}
        requests.post(self.base + "/_sim/rules", json={"rules": [rule]}, timeout=5).raise_for_status()

    def clear_rules(self):
        requests.delete(self.base + "/_sim/rules", timeout=5).raise_for_status()

    def attempts(self):
        return requests.get(self.base + "/_sim/stats", timeout=5).json()["requests"]

    def last(self, provider, model):
        return requests.get(self.base + "/_sim/last", params={"provider": provider, "model": model}, timeout=5).json()

    def healthy_answer(self, prompt):
        """What a healthy provider answers to this conversation: the simulator's reply depends on the
        conversation only, so one direct call to its OpenAI endpoint tells what every provider says."""
        resp = requests.post(self.base + "/v1/chat/completions", timeout=5,
                             headers={"Authorization": "Bearer sk-baseline", "X-Sim-Fault": "none"},
                             json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
        resp.raise_for_status()
        return resp.json()["choices"][0]["message"]["content"]

    def arm(self, prompt, *rules):
        """The healthy answer to `prompt`, then a clean slate (stats zeroed) with `rules` in force."""
        expected = self.healthy_answer(prompt)
        self.reset()
        for rule in rules:     # (provider, fault[, model[, times]])
            self.rule(*rule)
        return expected


@dataclasses.dataclass
class Result:
    status: int
    headers: dict
    elapsed: float
    body: dict | None = None            # a call's JSON body, or the JSON of a stream refused before its start
    chunks: list = dataclasses.field(default_factory=list)  # a stream's chunks, in order
    done: bool = False                  # the stream ended with data: [DONE]
    error: dict | None = None           # a stream's error event
    after_end: list = dataclasses.field(default_factory=list)  # anything after [DONE] or an error event
    gw: object = None                   # the gateway that answered (for its log rows)

    @property
    def text(self):
        if self.body is not None and "choices" in self.body:
            return self.body["choices"][0]["message"]["content"]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c.get("choices"))

    @property
    def model(self):
        """The answering model as the body says: a call's `model`, a stream's last chunk's."""
        if self.body is not None and "model" in self.body:
            return self.body["model"]
        return self.chunks[-1]["model"] if self.chunks else None

    @property
    def finish_reasons(self):
        return [c["choices"][0]["finish_reason"] for c in self.chunks
                if c.get("choices") and c["choices"][0].get("finish_reason")]

    @property
    def usage(self):
        if self.body is not None and "usage" in self.body:
            return self.body["usage"]
        found = [c["usage"] for c in self.chunks if c.get("usage")]
        return found[-1] if found else None


def chat(gw, prompt, model="gpt-4o-mini", stream=False, headers=None, session=None, timeout=30, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    if stream:
        body["stream"] = True
        body.setdefault("stream_options", {"include_usage": True})
    http = session or requests
    started = time.monotonic()
    # no-store: a fault test repeats requests and counts upstream attempts; a cached answer would hide them.
    sent = {**gw.headers, "Cache-Control": "no-store", **(headers or {})}
    resp = http.post(gw.base_url + "/v1/chat/completions", json=body, headers=sent, stream=stream, timeout=timeout)
    with resp:
        result = Result(resp.status_code, dict(resp.headers), 0.0, gw=gw)
        if not stream or not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            result.body = resp.json()
        else:
            for line in resp.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].decode()
                if result.done or result.error is not None:
                    result.after_end.append(data)
                elif data == "[DONE]":
                    result.done = True
                else:
                    event = json.loads(data)
                    if "error" in event:
                        result.error = event["error"]
                    else:
                        result.chunks.append(event)
    result.elapsed = time.monotonic() - started
    return result


_ENGINES = {}


def log_row(res, wait=3.0):
    """The request's row in the gateway's log table (written in the background, so polled for)."""
    url = res.gw.database_url
    engine = _ENGINES.get(url) or _ENGINES.setdefault(url, make_engine(url))
    table = gateway_logs
    deadline = time.monotonic() + wait
    while True:
        with engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.request_id == res.headers["X-Request-Id"])).all()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(rows) == 1, f"expected one log row, found {len(rows)}"
    return rows[0]


def assert_logged(res, status=None):
    """The row says what the client saw: status, failover, who answered, and why earlier attempts failed."""
    row = log_row(res)
    assert row.status_code == (status or res.status)
    attempts = json.loads(row.attempts) if row.attempts else []
    assert all(a["reason"] for a in attempts)
    if res.status == 200 and res.headers.get("X-Failover") == "true":
        assert row.failover_used and row.original_provider == res.headers["X-Original-Provider"]
    if row.failover_used:   # why: a failed attempt, or a member skipped for its open breaker
        assert attempts
    if res.status == 200 and res.error is None:
        # A stream continued on another model after its headers went out: the row (like the body's
        # `model`) names the model that finished the answer.
        assert row.model_served == res.model
    return row, attempts


def assert_served(res, provider, model, failover=False, original=None):
    """A 200 from `provider`/`model`, with headers and body agreeing on who answered."""
    assert res.status == 200, (res.status, res.body, res.error)
    assert res.headers["X-Provider"] == provider
    assert res.headers["X-Model"] == model
    assert res.headers["X-Failover"] == ("true" if failover else "false")
    if failover:
        assert res.headers["X-Original-Provider"] == (original or "openai")
    else:
        assert "X-Original-Provider" not in res.headers
    assert res.model == model
    assert_logged(res)


def assert_whole_stream(res, expected):
    """One whole answer: every word once, one role, one id, one finish, usage, then [DONE] and nothing else."""
    assert res.error is None, res.error
    assert res.done and not res.after_end
    assert res.text == expected
    roles = [c["choices"][0]["delta"].get("role") for c in res.chunks if c.get("choices")]
    assert roles.count("assistant") == 1 and roles[0] == "assistant"
    assert len({c["id"] for c in res.chunks}) == 1
    assert res.finish_reasons == ["stop"]
    assert res.usage and res.usage["completion_tokens"] > 0
    row, _ = assert_logged(res)
    assert row.completion_tokens == res.usage["completion_tokens"]


def assert_broken_stream(res, partial_of):
    """A stream that could not be finished: an error event after a prefix of the answer, never a clean end."""
    assert res.status == 200
    assert res.error is not None
    assert not res.done and not res.after_end
    assert res.finish_reasons == []
    assert partial_of.startswith(res.text) and res.text != partial_of
    row = log_row(res)
    assert row.status_code >= 500 and row.error_message and row.attempts    # the failure, not a 200
    assert all(a["reason"] for a in json.loads(row.attempts))
