"""The WSGI application: routing, the per-request corridor, stream pacing/faults and the control API.

Plain WSGI on purpose: under benchmark the simulator must cost far less CPU than the gateway.
No logging and no regex on the hot path; bodies are built with orjson from small dicts.
"""
import itertools
import os
import time
from urllib.parse import parse_qs

import gevent
import orjson

from . import errors
from .conversation import make_reply
from .endpoints import ANTHROPIC, GEMINI, MODEL_LISTS, OPENAI
from .faults import (MAX_WAIT_S, STREAM_POINT_KINDS, Abort, FaultSyntaxError, Rules, parse_fault,
                     wait_client_gone)
from .options import SimOptions

_JSON = [("Content-Type", "application/json")]


class Ids:
    """Per-request ids, unique within a run, cheap (a counter and a per-process prefix)."""
    __slots__ = ("n", "prefix", "created")

    def __init__(self, n, prefix):
        self.n, self.prefix, self.created = n, prefix, int(time.time())

    request = property(lambda s: f"req_{s.prefix}{s.n:08d}")
    openai = property(lambda s: f"chatcmpl-{s.prefix}{s.n:020d}")
    call = property(lambda s: f"call_{s.prefix}{s.n:012d}")
    anthropic = property(lambda s: f"msg_01{s.prefix}{s.n:016d}")
    tool = property(lambda s: f"toolu_01{s.prefix}{s.n:014d}")
    gemini = property(lambda s: f"{s.prefix}{s.n:015d}")


def _send(start_response, status, headers, body):
    start_response(status, headers + [("Content-Length", str(len(body)))])
    return [body]


def _read(environ):
    stream = environ.get("wsgi.input")
    return stream.read() if stream is not None else b""


class SimApp:
    def __init__(self, options=None):
        self.options = options or SimOptions()
        self.default_fault = parse_fault(self.options.fault)
        self.rules = Rules()
        self.requests = {}
        self.total = 0
        self.last = {}
        self._seq = itertools.count(1)
        self._prefix = "Sim" + os.urandom(3).hex()

    # ------------------------------------------------------------ routing

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "POST":
            if path.endswith("/chat/completions"):
                return self._serve(environ, start_response, OPENAI, None)
            if path.endswith("/messages"):
                return self._serve(environ, start_response, ANTHROPIC, None)
            colon = path.rfind(":")
            if colon > 0 and "/models/" in path:
                action = path[colon + 1:]
                if action in ("generateContent", "streamGenerateContent"):
                    route = GEMINI.route(path, colon, action, environ.get("QUERY_STRING", ""))
                    return self._serve(environ, start_response, GEMINI, route)
        if path.startswith("/_sim/"):
            return self._control(environ, start_response, method, path)
        if method == "GET" and path.endswith("/models"):
            return self._models(environ, start_response, path)
        return _send(start_response, "404 Not Found", _JSON, orjson.dumps({"error": {
            "message": f"Invalid URL ({method} {path})", "type": "invalid_request_error", "param": None,
            "code": None}}))

    def _models(self, environ, start_response, path):
        if "/v1beta/" in path:
            ep = GEMINI
        elif environ.get("HTTP_ANTHROPIC_VERSION") or environ.get("HTTP_X_API_KEY"):
            ep = ANTHROPIC
        else:
            ep = OPENAI
        denied = ep.auth(environ)
        if denied:
            return _send(start_response, *denied)
        body = errors.gjson(MODEL_LISTS["gemini"]) if ep is GEMINI else orjson.dumps(MODEL_LISTS[ep.name])
        return _send(start_response, "200 OK", _JSON, body)

    # ------------------------------------------------------------ the corridor

    def _record(self, provider, model, body, environ):
        key = provider + ":" + model
        self.requests[key] = self.requests.get(key, 0) + 1
        self.total += 1
        self.last[key] = self.last[provider] = (provider, model, environ, body)

    def _faults(self, environ, provider, model):
        header = environ.get("HTTP_X_SIM_FAULT")
        if header:
            return parse_fault(header)
        if self.rules.items:
            hit = self.rules.match(provider, model)
            if hit is not None:
                return hit
        return self.default_fault

    def _serve(self, environ, start_response, ep, route):
        raw = _read(environ)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self._record(ep.name, route.model if route else "", raw.decode(errors="replace"), environ)
            return _send(start_response, *ep.bad_json())
        model = ep.model(body, route)
        self._record(ep.name, model, body, environ)
        denied = ep.auth(environ)
        if denied:
            return _send(start_response, *denied)
        try:
            faults = self._faults(environ, ep.name, model)
        except FaultSyntaxError as exc:
            return _send(start_response, "400 Bad Request", _JSON, orjson.dumps({"error": str(exc)}))
        try:
            invalid = ep.check(body)
            if invalid:
                return _send(start_response, *invalid)
            ask = ep.ask(body, route)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:  # shapes no validator foresaw
            return _send(start_response, *ep.bad_request(f"Invalid request: {exc!r}"))
        if self.options.latency_ms:
            gevent.sleep(self.options.latency_ms / 1000)
        ids = Ids(next(self._seq), self._prefix)
        reply = None
        if faults:
            failed, reply = self._early_faults(environ, ep, ids, ask, faults)
            if failed:
                return _send(start_response, *failed)
        if reply is None:
            reply = make_reply(ask, self.options.tokens, self.options.seed)
        if not ask.stream:
            headers, payload = ep.body(ids, ask, reply)
            if faults:
                return self._faulty_body(environ, start_response, headers, payload, faults)
            return _send(start_response, "200 OK", headers, payload)
        headers, stream = ep.stream(ids, ask, reply, route)
        write = start_response("200 OK", headers)
        if not faults and not self.options.tokens_per_second:
            return iter((stream.joined(),))  # an iterator, not a list: chunked like the real thing
        return self._paced(environ, write, ep.name, stream, faults)

    def _early_faults(self, environ, ep, ids, ask, faults):
        """Faults decided before any byte is sent: `(error_response or None, replacement reply or None)`."""
        if "hang" in faults:
            wait_client_gone(environ, MAX_WAIT_S)
            raise Abort()
        if "reset" in faults:
            raise Abort(rst=True)
        if "bad_key" in faults:
            return errors.bad_key(ep.name), None
        if "status" in faults:
            params = faults["status"]
            return errors.status_error(ep.name, int(params.get("code", 500)), ask.model, params), None
        if "reject_prefill" in faults and ask.last_is_assistant:
            return errors.reject_prefill(ep.name), None
        if "context_length" in faults:
            return errors.context_length(ep.name, ask.prompt_tokens), None
        if "content_policy" in faults:
            return ep.content_policy(ids, ask)
        if "slow_first" in faults and not ask.stream:
            if wait_client_gone(environ, faults["slow_first"].get("ms", 1000) / 1000):
                raise Abort()
        return None, None

    def _faulty_body(self, environ, start_response, headers, payload, faults):
        if "stall" in faults:
            ms = faults["stall"].get("ms")
            if wait_client_gone(environ, MAX_WAIT_S if ms is None else ms / 1000):
                raise Abort()
        if "malformed" in faults:
            return _send(start_response, "200 OK", headers, payload[: len(payload) // 2])
        if "cut" in faults:  # promise the whole body, send half, hang up
            start_response("200 OK", headers + [("Content-Length", str(len(payload)))])
            return _half_then_close(payload)
        return _send(start_response, "200 OK", headers, payload)

    def _paced(self, environ, write, provider, stream, faults):
        """Stream events one by one: pace (`--tokens-per-second`) and apply stream faults."""
        tps = self.options.tokens_per_second
        gap = 1.0 / tps if tps > 0 else 0.0
        write(b"")  # the status is decided: send the headers now, before any (slow) first event
        if "slow_first" in faults:
            if wait_client_gone(environ, faults["slow_first"].get("ms", 1000) / 1000):
                raise Abort()
        n = len(stream.content)
        points = {}
        for kind in STREAM_POINT_KINDS:
            params = faults.get(kind)
            if params is not None:
                points.setdefault(min(max(int(params.get("after", 0)), 0), n), []).append((kind, params))
        if stream.head:
            yield b"".join(stream.head)
        for i in range(n + 1):
            for kind, params in points.get(i, ()):
                if kind == "stall":
                    ms = params.get("ms")
                    if wait_client_gone(environ, MAX_WAIT_S if ms is None else ms / 1000):
                        raise Abort()
                elif kind == "malformed":
                    yield errors.MALFORMED[provider]
                elif kind == "error_event":
                    yield errors.stream_error_event(provider, params.get("code"))
                    return
                elif kind == "cut":
                    raise Abort()
            if i < n:
                if gap:
                    gevent.sleep(gap)
                yield stream.content[i]
        tail = b"".join(stream.tail)
        yield tail if "no_done" in faults else tail + stream.terminator

    # ------------------------------------------------------------ control API

    def _control(self, environ, start_response, method, path):
        name = path[len("/_sim/"):].strip("/")
        if name == "rules":
            if method == "POST":
                try:
                    spec = orjson.loads(_read(environ) or b"{}")
                    self.rules.add(spec.get("rules") if isinstance(spec, dict) else None)
                except (orjson.JSONDecodeError, FaultSyntaxError) as exc:
                    return _send(start_response, "400 Bad Request", _JSON, orjson.dumps({"error": str(exc)}))
            elif method == "DELETE":
                self.rules.clear()
            return _send(start_response, "200 OK", _JSON, orjson.dumps({"rules": self.rules.describe()}))
        if name == "stats" and method == "GET":
            return _send(start_response, "200 OK", _JSON,
                         orjson.dumps({"requests": self.requests, "total": self.total}))
        if name == "reset" and method == "POST":
            self.rules.clear()
            self.requests, self.total, self.last = {}, 0, {}
            return _send(start_response, "200 OK", _JSON, b'{"ok":true}')
        if name == "last" and method == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            provider = (query.get("provider") or [""])[0]
            model = (query.get("model") or [None])[0]
            hit = self.last.get(provider if model is None else provider + ":" + model)
            if hit is None:
                return _send(start_response, "404 Not Found", _JSON, b'{"error":"no request recorded"}')
            return _send(start_response, "200 OK", _JSON, orjson.dumps(_describe(hit)))
        if name == "health":
            return _send(start_response, "200 OK", _JSON, b'{"ok":true}')
        return _send(start_response, "404 Not Found", _JSON, orjson.dumps({"error": f"unknown {method} {path}"}))


def _describe(record):
    provider, model, environ, body = record
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return {"provider": provider, "model": model, "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"), "query": environ.get("QUERY_STRING", ""),
            "headers": headers, "body": body}


def _half_then_close(payload):
    yield payload[: len(payload) // 2]
    raise Abort()


def make_app(options=None):
    """The simulator as a WSGI application (serve it with `serve()` for the connection faults)."""
    return SimApp(options)
