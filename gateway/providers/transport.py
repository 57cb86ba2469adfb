"""HTTP to the upstreams, once for every provider: pooled sessions, timeouts, SSE framing.

Faults become UpstreamError with a `reason` the failover manager acts on: `connect` (refused or reset
before any byte), `timeout` (no answer), `first_token` (a stream that never starts), `stall` (a stream
that stops sending), `cut` (a stream that ends without its terminator), `malformed` (a body that is not
JSON). Provider keys never reach an error message: messages are built from the URL's host only.
"""
import contextlib
import http.cookiejar
import json
import logging
from urllib.parse import urlsplit

import orjson
import requests
import sseclient
import urllib3
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity

from gateway.deadline import bounded, gevent_patched
from gateway.jsonbytes import loads
from gateway.providers.pools import Adapter
from gateway.translate.common import UpstreamError, error_object

log = logging.getLogger("gateway")
_ORIGINS_KEPT = 64
_URLS_KEPT = 1024  # upstream URLs come from the model table: a few per model
_NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])  # a jar policy that accepts none
# After a stream's last event, how long and how much more of its response is read to keep the connection.
_DRAIN_SECONDS = 0.1
_DRAIN_BYTES = 65536


class _Session(requests.Session):
    """A Session that reads requests' environment settings once per upstream origin, not on every call.

    For each request, requests looks up proxy variables (walking os.environ twice, ~0.15 ms of CPU per call
    here) and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE. The result depends only on the URL's scheme, host and port
    and on the environment, which the gateway reads once at start anyway; so it is kept per origin. Calls that
    pass their own proxies, verify or cert are answered as requests would, uncached.
    """

    # The most an answer may hold (a non-streamed body, an error body, one stream event), in bytes: an upstream
    # that sends without end must not fill the worker's memory. GATEWAY_MAX_RESPONSE_BYTES; see make_session.
    max_body = 64 << 20

    def __init__(self):
        super().__init__()
        self._environment = {}
        self._urls = {}

    def origin_settings(self, url, stream):
        """requests' environment settings for `url` (proxies, verify, cert), kept per origin. Read-only."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream)
        settings = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, {}, stream, None, None)
            if len(self._environment) < _ORIGINS_KEPT:  # image downloads reach any origin: keep a few
                self._environment[key] = settings
        return settings

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if proxies or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings = self.origin_settings(url, stream)
        return {**settings, "proxies": dict(settings["proxies"])}

    def post_json(self, url, headers, body, timeout, stream):
        """POST `body` as JSON through the mounted HTTPAdapter, as `Session.post` would, without its per-call
        machinery: cookie jars, .netrc look-ups, settings merges and redirect handling cost ~0.2 ms of CPU per
        upstream call here, for nothing an API call uses (an upstream answers, it does not redirect or set
        cookies that one tenant's request should carry into another's). Same exceptions, same Response."""
        req = requests.PreparedRequest()
        req.method, req.url = "POST", self._prepared_url(url)
        req.body = _json_bytes(body)
        req.headers = CaseInsensitiveDict({**self.headers, **headers, "Content-Length": str(len(req.body))})
        for header in headers.items():
            check_header_validity(header)  # as PreparedRequest.prepare_headers does: InvalidHeader
        env = self.origin_settings(url, stream)
        resp = self.get_adapter(url).send(req, stream=stream, timeout=timeout, verify=env["verify"],
                                          cert=env["cert"], proxies=env["proxies"])
        if not stream:
            try:
                # Read the body now, as Session.send does: the connection goes back to the pool.
                read_within(resp, self.max_body)
            except requests.exceptions.ConnectionError as e:
                # requests reports the headers, then silence, as a ConnectionError: it is a read timeout (an
                # upstream that answers nothing more), not a connection that failed, and is not retried.
                if e.args and isinstance(e.args[0], urllib3.exceptions.ReadTimeoutError):
                    raise requests.exceptions.ReadTimeout(e.args[0]) from None
                raise
        return resp

    def _prepared_url(self, url):
        """The URL as requests would send it (IDNA host, percent-quoting), worked out once per URL."""
        prepared = self._urls.get(url)
        if prepared is None:
            p = requests.PreparedRequest()
            p.prepare_url(url, None)
            prepared = p.url
            if len(self._urls) < _URLS_KEPT:
                self._urls[url] = prepared
        return prepared


def _json_bytes(body):
    """The body as JSON, in a bytes object of its own size. orjson's output keeps the buffer it was written
    in, which is ~4 KB for a short body and ~10 times the body for a long one (5 KB of JSON held 65 KB), and
    the request's body lives as long as its response: for a stream, until its last event. The copy costs
    ~0.1 µs per KB."""
    try:
        return bytes(memoryview(orjson.dumps(body)))
    except orjson.JSONEncodeError:  # what orjson refuses (an integer past 64 bits) the standard library writes
        pass
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except RecursionError:
        # The request parser reads 1,024 levels; no encoder here writes that many. The client's request, not
        # a fault of the upstream's: a 400, never a 500.
        raise UpstreamError(400, error_object("The request is nested too deeply to be sent on.",
                                              "invalid_request_error", None, "nested_too_deeply")) from None


class AnswerTooLarge(requests.exceptions.RequestException):
    """An upstream answer (or one stream event) past the session's `max_body`: nothing more of it is read."""

    def __init__(self, limit):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


def read_within(resp, limit):
    """The body, as `resp.content` reads it (decoded), kept as `resp.content`; AnswerTooLarge, and the connection
    closed, once it is declared or found to be larger than `limit` bytes."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        resp.close()
        raise AnswerTooLarge(limit)
    parts, size = [], 0
    for part in resp.iter_content(65536):
        size += len(part)
        if size > limit:
            resp.close()
            raise AnswerTooLarge(limit)
        parts.append(part)
    resp._content = b"".join(parts)  # what requests' own `content` keeps (read once)
    return resp._content


# A line terminator (LF, CR or CRLF) right after another: an empty line, which ends an SSE event. Two bytes
# each, so a blank line split across two chunks is seen in the last byte of one and the first of the next.
_BLANK_LINES = (b"\n\n", b"\n\r", b"\r\r")


def _blank_line_in(data):
    """Where the last blank line in `data` starts, or -1."""
    return max(data.rfind(blank) for blank in _BLANK_LINES)


def _events_within(chunks, limit):
    """`chunks`, with AnswerTooLarge once more than `limit` bytes came without the blank line that ends an SSE
    event. Servers that write line by line send each event's blank line in a chunk of its own."""
    pending, last = 0, b""
    for chunk in chunks:
        end = _blank_line_in(chunk)
        if end >= 0:
            pending = len(chunk) - end
        elif last and chunk and _blank_line_in(last + chunk[:1]) >= 0:
            pending = len(chunk)
        else:
            pending += len(chunk)
        if pending > limit:
            raise AnswerTooLarge(limit)
        last = chunk[-1:] or last
        yield chunk


def make_session(pool_size, adapter_class=Adapter, max_body=None):
    """One keep-alive pool per provider, as large as a worker's concurrency (idle connections expire: see
    pools.py). It keeps no cookies: what one tenant's call (or image download) is sent must not ride along
    on another's. `max_body`: the most an answer may hold, in bytes (see `_Session.max_body`)."""
    session = _Session()
    if max_body is not None:
        session.max_body = max_body
    session.cookies.set_policy(_NO_COOKIES)
    adapter = adapter_class(pool_connections=4, pool_maxsize=pool_size, max_retries=0, pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _host(url):
    return urlsplit(url).netloc


def _fault(status, message, reason, code="upstream_error"):
    return UpstreamError(status, error_object(message, "upstream_error", None, code), reason=reason,
                         upstream_status=None)


_RETRY_AFTER_MAX = 86400.0  # longer is no hint a client can use; inf and nan (float() reads both) none at all


# What a translator raises on JSON of the wrong shape (an upstream's fault, never the client's nor ours to 500 on).
_WRONG_SHAPE = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def _retry_after(headers):
    """Seconds from retry-after-ms or retry-after (a number), or None when neither gives a usable one."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                seconds = float(raw) / scale
            except ValueError:
                continue
            return seconds if 0 <= seconds <= _RETRY_AFTER_MAX else None
    return None


def _error_from_response(provider, resp):
    text = resp.text
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # Gemini's JSON-array stream wraps its error in a list
    try:
        return provider.error(resp.status_code, body, text, _retry_after(resp.headers))
    except _WRONG_SHAPE:  # an error body whose fields are not what the provider's format says ({"type": [1]})
        return provider.error(resp.status_code, None, "", _retry_after(resp.headers))


def post(session, provider, url, headers, body, timeout, stream):
    host = _host(url)
    if stream:
        headers = {**headers, "Accept": "text/event-stream", "Accept-Encoding": "identity"}
    try:
        return session.post_json(url, headers, body, timeout, stream)
    except requests.exceptions.ConnectTimeout:
        raise _fault(504, f"Timed out connecting to {provider.name} ({host}).", "connect") from None
    except requests.exceptions.ReadTimeout:
        raise _fault(504, f"{provider.name} ({host}) did not answer in time.", "timeout",
                     "upstream_timeout") from None
    except AnswerTooLarge as e:
        raise _fault(502, f"{provider.name} ({host}) sent an answer larger than {e.limit:,} bytes "
                          "(GATEWAY_MAX_RESPONSE_BYTES).", "too_large") from None
    except requests.exceptions.InvalidHeader:
        # A header value with a line break (a provider key, say): never valid, so failed over, not retried.
        # Not echoed: the value may be the key.
        raise _fault(502, f"A request header for {provider.name} is not valid: check its API key for stray "
                          "characters.", "bad_header") from None
    except requests.exceptions.RequestException as e:
        kind = type(e).__name__
        raise _fault(502, f"Could not reach {provider.name} ({host}): {kind}.", "connect") from None


def _refuse_redirect(provider, resp):
    """An API call is not redirected: a 3xx means the base URL is wrong (http:// where https:// is served,
    say). The call is not repeated elsewhere in secret; the error says where to point the base URL."""
    if 300 <= resp.status_code < 400:
        resp.close()
        raise _fault(502, f"{provider.name} ({_host(resp.url)}) answered {resp.status_code}, redirecting to "
                          f"{_where(resp.headers.get('Location'))}: set its base URL to where it redirects.",
                     "redirect", "upstream_redirect")


def _where(location):
    """A redirect's target without query or user info (either could hold a secret)."""
    try:
        to = urlsplit(location or "")
        port = to.port
    except ValueError:  # a malformed IPv6 host, a port that is not a number
        return "an invalid location"
    if not to.hostname:
        return to.path or "nowhere"
    return f"{to.scheme}://{to.hostname}{f':{port}' if port else ''}{to.path}"


@contextlib.contextmanager
def within(seconds, fault):
    """Raise `fault()` (an UpstreamError) if the upstream I/O inside the block takes more than `seconds`.

    The socket timeouts bound each wait for a byte, not a whole answer: an upstream that sends its headers
    and then one byte every few seconds (a congested link, a proxy trickling a body, SSE keep-alive comments
    with no event) held a request far past GATEWAY_DEADLINE and GATEWAY_FIRST_TOKEN_TIMEOUT. Only under gevent,
    where a wait can be interrupted; the block must do nothing but talk to the upstream (never write to the
    client, whose slowness is not the upstream's). An interrupted read leaves urllib3 closing the
    connection, never pooling it."""
    if seconds is None or not gevent_patched("socket"):
        yield
        return
    with bounded(max(seconds, 0.001), fault):
        yield


def complete(session, provider, request, model, id_, created, timeout, total=None):
    """One non-streaming call: (completion dict, upstream response headers). `total` bounds the whole call
    (headers and body), in seconds."""
    url, headers, body = provider.prepare(request, model, stream=False)
    with within(total, lambda: _fault(504, f"{provider.name} ({_host(url)}) did not answer in time.", "timeout",
                                      "upstream_timeout")):
        resp = post(session, provider, url, headers, body, timeout, stream=False)
    _refuse_redirect(provider, resp)
    if resp.status_code >= 400:
        raise _error_from_response(provider, resp)
    try:
        data = _json_body(resp)
    except ValueError:
        raise _fault(502, f"{provider.name} returned a body that is not JSON.", "malformed") from None
    if not isinstance(data, dict):
        raise _fault(502, f"{provider.name} returned JSON that is not an object.", "malformed")
    try:
        return provider.parse(data, model, id_, created)
    except _WRONG_SHAPE:  # JSON no API sends ("content": [5], "candidates": [5]): the upstream's fault, failed over
        raise _fault(502, f"{provider.name} returned an answer of the wrong shape.", "malformed") from None


def _json_body(resp):
    """The response's JSON (gateway/jsonbytes.py: orjson where it reads the same as the json module), then
    requests' own decoding (a declared charset) for what that refuses. ValueError when it is not JSON."""
    try:
        return loads(resp.content)
    except ValueError:
        return resp.json()


def _set_timeout(resp, seconds):
    try:
        resp.raw.connection.sock.settimeout(seconds)
    except AttributeError:
        pass


def _raw_bytes(resp):
    raw = resp.raw
    if raw.chunked and raw.supports_chunked_reads():
        yield from raw.read_chunked(decode_content=True)
        return
    while True:
        data = raw.read1(65536)
        if not data:
            return
        yield data


class UpstreamStream:
    """An open upstream stream, already past its first event, yielding OpenAI chunks.

    Iterating raises UpstreamError(reason=stall|cut|...) when the stream breaks after it started;
    `close()` (also called when the client goes away) drops the upstream connection at once, unless the
    answer was finished and its response read to the end: then the connection goes back to the pool.
    """

    def __init__(self, provider, resp, state, read_timeout, max_event=_Session.max_body):
        self.provider = provider
        self.resp = resp
        self.state = state
        self.read_timeout = read_timeout
        self.malformed = 0
        self.finished = False
        self._body = _raw_bytes(resp)
        self._events = sseclient.SSEClient(_events_within(self._body, max_event)).events()
        self._pending = []

    def start(self):
        """Read until the first chunk so an upstream failure can still be failed over cleanly."""
        while not self._pending and not self.finished:
            self._pending = self._next_chunks(first=True)
        _set_timeout(self.resp, self.read_timeout)
        return self

    def _next_chunks(self, first=False):
        try:
            event = next(self._events)
        except StopIteration:
            return self._end()
        except (urllib3.exceptions.ReadTimeoutError, requests.exceptions.ReadTimeout, TimeoutError):
            name = self.provider.name
            if first:
                raise _fault(504, f"{name} sent no first token in time.", "first_token", "upstream_timeout") from None
            raise _fault(504, f"The {name} stream stalled.", "stall", "upstream_timeout") from None
        except AnswerTooLarge as e:
            raise _fault(502, f"{self.provider.name} sent a stream event larger than {e.limit:,} bytes "
                              "(GATEWAY_MAX_RESPONSE_BYTES).", "too_large") from None
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError):
            raise _fault(502, f"The {self.provider.name} stream was cut off.", "cut") from None
        except UnicodeDecodeError:  # sseclient decodes each line as UTF-8, and its iterator ends there
            raise _fault(502, f"{self.provider.name} sent a stream event that is not UTF-8.", "malformed") from None
        data = event.data
        if data == "[DONE]":
            return self._end(done=True)
        if not data:
            return []
        try:
            payload = loads(data)  # orjson where it reads the same: the json module took ~11% of a long stream
        except ValueError:
            self.malformed += 1
            log.warning("skipped a malformed event from %s", self.provider.name)
            return []
        if not isinstance(payload, dict):
            self.malformed += 1
            return []
        try:
            return self.state.feed(event.event if event.event != "message" else "", payload)
        except _WRONG_SHAPE:
            # JSON of the wrong shape ("choices": [5], an object for an index, "delta": "x"): skipped as a
            # malformed event is, not let through to end the client's stream with no error and no [DONE].
            self.malformed += 1
            log.warning("skipped an event of the wrong shape from %s", self.provider.name)
            return []

    def _end(self, done=False):
        self.finished = True
        chunks = self.state.finish()
        if self.state.finish_reason is None:
            raise _fault(502, f"The {self.provider.name} stream ended before the answer was complete.", "cut")
        return chunks

    def __iter__(self):
        try:
            while True:
                if self._pending:
                    chunks, self._pending = self._pending, []
                    yield from chunks
                if self.finished:
                    return
                self._pending = self._next_chunks()
        finally:
            self.close()

    def close(self):
        # requests' close() drops a connection whose body it did not read itself, which was every stream's:
        # each stream then paid a new connection to the upstream (a TLS handshake, on a real provider).
        if self.finished and self._read_to_end():
            self.resp.raw.release_conn()
        self.resp.close()

    def _read_to_end(self):
        """Whether the rest of the response (after `[DONE]`, just the chunked terminator) came at once."""
        _set_timeout(self.resp, _DRAIN_SECONDS)
        left = _DRAIN_BYTES
        try:
            for data in self._body:
                left -= len(data)
                if left < 0:
                    return False
        except Exception:  # noqa: BLE001 - a timeout or a cut: the connection is not worth keeping
            return False
        return True


def open_stream(session, provider, request, model, id_, created, timeout, read_timeout, first_token=None):
    """An UpstreamStream past its first event. `first_token` bounds the whole wait for it, in seconds."""
    url, headers, body = provider.prepare(request, model, stream=True)
    with within(first_token, lambda: _fault(504, f"{provider.name} sent no first token in time.", "first_token",
                                            "upstream_timeout")):
        resp = post(session, provider, url, headers, body, timeout, stream=True)
        _refuse_redirect(provider, resp)
        if resp.status_code >= 400:
            try:
                read_within(resp, session.max_body)
                raise _error_from_response(provider, resp)
            except AnswerTooLarge as e:
                raise _fault(502, f"{provider.name} ({_host(url)}) sent an error larger than {e.limit:,} bytes "
                                  "(GATEWAY_MAX_RESPONSE_BYTES).", "too_large") from None
            finally:
                resp.close()
        stream = UpstreamStream(provider, resp, provider.stream_state(model, id_, created), read_timeout,
                                session.max_body)
        try:
            return stream.start()
        except BaseException:
            stream.close()
            raise
