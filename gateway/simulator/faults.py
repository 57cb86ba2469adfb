"""Faults: their syntax, the runtime rule list, and the connection tricks (hang, reset, cut).

A fault spec is `kind[:param=value,...]`, several joined with `;`
(e.g. `slow_first:ms=200;cut:after=3`). It comes from the `X-Sim-Fault` request header, from a
rule set through the control API, or from `--fault`, in that order of precedence.
"""
import socket
import struct
import time

import gevent
from gevent.socket import wait_read

PROVIDERS = ("openai", "anthropic", "gemini")

# kind -> the params it understands (documentation and validation in one place)
KINDS = {
    "none": (),                      # explicitly no fault (overrides --fault for a rule/header)
    "status": ("code", "retry_after", "should_retry"),
    "hang": (),
    "reset": (),
    "slow_first": ("ms",),
    "cut": ("after",),
    "stall": ("after", "ms"),
    "malformed": ("after",),
    "no_done": (),
    "error_event": ("after", "code"),
    "context_length": (),
    "content_policy": (),
    "reject_prefill": (),
    "bad_key": (),
}
STREAM_POINT_KINDS = ("stall", "malformed", "error_event", "cut")  # applied at a content-event count
MAX_WAIT_S = 600.0  # "forever" is bounded so an abandoned simulator never keeps greenlets for hours


class FaultSyntaxError(ValueError):
    pass


class Abort(Exception):
    """Raised inside the app (or its stream iterator) to drop the connection without a (complete) reply.

    `rst=True` closes with SO_LINGER 0 so the peer sees a TCP reset; otherwise a plain FIN.
    """

    def __init__(self, rst=False):
        super().__init__("reset" if rst else "close")
        self.rst = rst


def _value(text):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


_cache = {}


def parse_fault(text):
    """`"status:code=429,retry_after=2"` -> `{"status": {"code": 429, "retry_after": 2}}`. Cached."""
    if not text:
        return {}
    hit = _cache.get(text)
    if hit is not None:
        return hit
    out = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        kind, _, rest = item.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise FaultSyntaxError(f"unknown fault kind {kind!r} (known: {', '.join(sorted(KINDS))})")
        params = {}
        for pair in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, val = pair.partition("=")
            key = key.strip()
            if not eq or key not in KINDS[kind]:
                accepts = ", ".join(KINDS[kind]) or "none"
                raise FaultSyntaxError(f"fault {kind!r}: bad parameter {pair!r} (accepts: {accepts})")
            params[key] = _value(val.strip())
        out[kind] = params
    if len(_cache) > 1024:
        _cache.clear()
    _cache[text] = out
    return out


class Rules:
    """Faults set at runtime (`POST /_sim/rules`): first matching rule with times left applies."""

    def __init__(self):
        self.items = []

    def add(self, specs):
        if not isinstance(specs, list):
            raise FaultSyntaxError("'rules' must be a list")
        new = []
        for spec in specs:
            if not isinstance(spec, dict):
                raise FaultSyntaxError("each rule must be an object")
            provider, model, times = spec.get("provider"), spec.get("model"), spec.get("times")
            if provider is not None and provider not in PROVIDERS:
                raise FaultSyntaxError(f"rule provider must be one of {PROVIDERS} or null")
            if model is not None and not isinstance(model, str):
                raise FaultSyntaxError("rule model must be a string or null")
            if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 0):
                raise FaultSyntaxError("rule times must be a non-negative integer or null")
            fault = spec.get("fault")
            if not isinstance(fault, str):
                raise FaultSyntaxError("rule fault must be a string")
            new.append({"provider": provider, "model": model, "fault": fault, "times": times,
                        "hits": 0, "parsed": parse_fault(fault)})
        self.items.extend(new)

    def match(self, provider, model):
        for rule in self.items:
            if rule["times"] == 0:
                continue
            if rule["provider"] is not None and rule["provider"] != provider:
                continue
            if rule["model"] is not None and rule["model"] != model:
                continue
            if rule["times"] is not None:
                rule["times"] -= 1
            rule["hits"] += 1
            return rule["parsed"]
        return None

    def clear(self):
        self.items = []

    def describe(self):
        return [{k: r[k] for k in ("provider", "model", "fault", "times", "hits")} for r in self.items]


def _handler(environ):
    return environ.get("sim.handler")


def _socket(environ):
    handler = _handler(environ)
    if handler is not None:
        return handler.socket
    return environ.get("gunicorn.socket")


def wait_client_gone(environ, seconds):
    """Sleep up to `seconds`, returning True as soon as the client closes its end of the connection."""
    seconds = min(float(seconds), MAX_WAIT_S)
    sock = _socket(environ)
    if sock is None:
        gevent.sleep(seconds)
        return False
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            wait_read(sock.fileno(), timeout=remaining)
        except socket.timeout:
            return False
        except (OSError, ValueError):
            return True
        try:
            if not sock.recv(1, socket.MSG_PEEK):
                return True
        except OSError:
            return True
        # The client sent more bytes (a pipelined request): it is still there; poll gently.
        gevent.sleep(min(remaining, 0.05))


def drop_connection(handler, rst):
    """Close the handler's connection now; with `rst`, as a TCP reset (SO_LINGER 0)."""
    handler.close_connection = True
    sock = handler.socket
    if sock is None:
        return
    try:
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The buffered reader holds a reference to the socket; the fd only closes when both let go.
        handler.rfile.close()
        sock.close()
    except OSError:
        pass
