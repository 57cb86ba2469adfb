"""How gunicorn puts our responses on the wire: the status line and headers leave with the first body bytes.

gunicorn's HTTP/1 response sends its head and then each body piece, one `sendall` each: a cache hit or any
JSON answer took two system calls and two TCP segments where one will do (py-spy: the head's own send was
~8% of a cache hit's CPU). This subclass builds the head with gunicorn's own `send_headers` (so it stays
what gunicorn would send) and sends it in the same `sendall` as the first body piece; a response with no
body piece (HEAD, 204, an empty body) sends its head alone, as before. The bytes on the wire are the same.

Body pieces go out with one `send` where gunicorn's `sendall` cost gevent a getsockopt system call each
(`_send`): a stream writes one piece per event.

Every wait on a client is bounded by GATEWAY_CLIENT_TIMEOUT (the client socket's timeout, set with the
response): a client that stops reading, or stops sending its body, is let go after it, where before it held a
greenlet and an upstream call for as long as its connection stayed open.

Two of gunicorn's per-request steps are remembered, each ~1.5-2% of a cache hit's CPU in py-spy: the `Date`
header (formatted by the e-mail package on every response, though it changes once a second) and whether the
peer's address is in `forwarded_allow_ips` (parsed by `ipaddress` on every request, though the list is fixed
for the worker's life and clients are few).

What gunicorn refuses itself, before the app sees a request (a request line or headers it cannot parse or
that are too large: 400, 414, 431, ...), it answered with an HTML page; `write_error` answers in OpenAI's
error shape instead, so an SDK shows the reason and a client parsing JSON errors gets one.

A worker takes up to ACCEPT_PER_WAKE new connections each time its listening socket wakes it (`_accepting`).
gunicorn has gevent's server take one when there are several workers, so that one worker does not take them
all; but a saturated worker's loop comes back to its listening socket only once per round of its clients, and
a burst of new connections waited in the kernel's queue: 128 connections opened at once to two busy workers
got their first answers one every ~12 ms, the last after 1.5 s. A few at a time keeps the work split.

Between two requests on a keep-alive connection the worker's other clients have their turn (`_taking_turns`).

`install()` runs in each worker (gunicorn.conf.py's `post_worker_init`): gunicorn builds its HTTP/1
response from the module's `Response` name, looks `util.http_date` and `message._ip_in_allow_list` up when
it calls them, a gevent worker makes its server from `ggevent.StreamServer` when it starts to run and serves
each request through its class's `handle_request`, so those names are pointed at what is here.
"""
import errno
import json
import sys
import time

from gunicorn import util
from gunicorn.http import message, wsgi

from gateway.balance import Balanced
from gateway.translate.common import error_object
from gateway.turns import take_turn

# A bare Flask echo, gunicorn with 2 gevent workers, wrk at c=64 / c=128 (new connections each run): p99 450 ms
# / 1.1 s taking 1 a wake, 81 / 155 ms taking 4, 29 / 61 ms taking 16. The gateway at c=64, 4 against 1, by
# turns: p99 740 -> 439 ms (upstream calls), 373 -> 83 ms (cache hits), CPU and p50 the same within 3%. At 16 one
# wake took a quarter of wrk's 64 connections: workers held 48 and 16, and upstream calls' p50 rose by a fifth.
ACCEPT_PER_WAKE = 4
_PEERS_KEPT = 4096  # distinct client addresses remembered; past that the memo starts over
_client_timeout = None  # seconds, set by install(): GATEWAY_CLIENT_TIMEOUT


class _Held:
    """A stand-in socket that keeps what is written to it."""

    def __init__(self):
        self.data = b""

    def sendall(self, data):
        self.data += data


class Response(wsgi.Response):
    _head = None  # the head's bytes, built but not yet sent

    def __init__(self, req, sock, cfg):
        super().__init__(req, sock, cfg)
        # Every wait on this client is bounded from here on: for it to take more of the answer (`_send`), or to
        # send more of its body (handlers/chat.py answers 408).
        if _client_timeout is not None and sock.gettimeout() is None:
            sock.settimeout(_client_timeout)

    def write(self, arg):
        if self.headers_sent:
            return super().write(arg)
        sock, held = self.sock, _Held()
        self.sock = held
        try:
            self.send_headers()
        finally:
            self.sock = sock
        self._head = held.data
        try:
            super().write(arg)  # sends the head with the body piece (_emit_body) when there is one
        finally:
            self._send_head()

    def _emit_body(self, data):
        head, self._head = self._head, None
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        _send(self.sock, data if head is None else head + data)

    def close(self):
        try:
            self._send_head()
            if self.chunked and self.headers_sent:
                _send(self.sock, b"0\r\n\r\n")  # the last chunk, as gunicorn's close() writes it
                return
            super().close()
        finally:
            # Between requests the wait is gunicorn's keep-alive (its own timer, GATEWAY_KEEPALIVE): the client
            # timeout must not cut an idle connection shorter, nor end it with a logged traceback.
            if _client_timeout is not None:
                self.sock.settimeout(None)

    def _send_head(self):
        head, self._head = self._head, None
        if head:
            _send(self.sock, head)


def _send(sock, data):
    """sendall, less gevent's getsockopt(SO_SNDBUF) on every call (~6% of a long stream's CPU: one call per
    event): one send takes a stream event or a small answer whole; more are needed only when the socket's buffer
    is full. Each waits at most the client timeout for the client to take some of it (sendall would bound the
    whole piece instead, failing a slow but steady download): one that takes nothing in that time is treated as
    gone, as if it had closed the connection, so its stream and the upstream call behind it end."""
    try:
        sent = sock.send(data)
        if sent < len(data):
            rest = memoryview(data)
            while sent < len(rest):
                sent += sock.send(rest[sent:])
    except TimeoutError:
        raise BrokenPipeError(errno.EPIPE, "the client took nothing of the answer in time") from None


def _date_memo(http_date):
    """gunicorn's http_date, formatted once per second for the current time."""
    last = [None, None]  # [second, its header value]

    def memo(timestamp=None):
        if timestamp is not None:
            return http_date(timestamp)
        second = int(time.time())  # the header has whole seconds: the float time formats to the same text
        if last[0] != second:
            last[1], last[0] = http_date(second), second
        return last[1]
    memo.unmemoized = http_date
    return memo


def _peer_memo(in_allow_list):
    """gunicorn's _ip_in_allow_list, answered from a memo per (address, allow list, networks). The lists are
    the worker's configuration objects, which do not change while it runs."""
    known = {}

    def memo(ip_str, allow_list, networks):
        key = (ip_str, id(allow_list), id(networks))
        found = known.get(key)
        if found is None:
            if len(known) >= _PEERS_KEPT:
                known.clear()
            found = known[key] = in_allow_list(ip_str, allow_list, networks)
        return found
    memo.unmemoized = in_allow_list
    return memo


# gunicorn's refusals (gunicorn/workers/base.py handle_error) → OpenAI error codes.
_PROTOCOL_CODES = {400: "invalid_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
                   431: "request_header_fields_too_large", 501: "not_implemented"}


def write_error(sock, status_int, reason, mesg):
    """gunicorn's util.write_error, with the body in OpenAI's error shape rather than an HTML page."""
    server = status_int >= 500
    text = mesg or ("The gateway had an internal error processing your request." if server else reason)
    body = json.dumps({"error": error_object(text, "server_error" if server else "invalid_request_error", None,
                                             _PROTOCOL_CODES.get(status_int))}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def _accepting(server_class):
    """gevent's server class, taking at least ACCEPT_PER_WAKE connections a wake-up when told to take fewer, and
    leaving them to less-loaded workers (gateway/balance.py)."""
    class Server(Balanced, server_class):
        @property
        def max_accept(self):
            return self.__dict__.get("_max_accept", server_class.max_accept)

        @max_accept.setter
        def max_accept(self, value):
            self.__dict__["_max_accept"] = max(value, ACCEPT_PER_WAKE)

    Server.__name__ = Server.__qualname__ = f"Accepting{server_class.__name__}"
    Server.unpatched = server_class
    return Server


def _taking_turns(handle_request):
    """A gevent worker's `handle_request` that lets the worker's other clients have their turn before this
    connection's next request is read.

    gunicorn serves a keep-alive connection in a loop, reading its next request as soon as it has answered one,
    and a greenlet runs until it has to wait. A client that sends its next request at once (an SDK's pool,
    nginx's keep-alive pool, wrk) and an upstream or Redis that answers before the gateway reads it (a cache
    hit, a model server nearby) never make it wait: one connection was served over and over while the worker's
    other clients waited. wrk on two workers, upstream calls, p99: 38 -> 7.8 ms at c=8, 195 -> 70 ms at c=64;
    cache hits at c=8: 5.1 -> 2.3 ms. The mean stays what it was (p50 rises as much as the few served at once
    lose); c=1 unchanged.

    The turn is a timer (~4 µs, gateway/turns.py), not `sleep(0)`, which left a client waiting on its socket
    served last. Every request takes it, also one that waited (on an upstream, say) and so let the others run
    already: skipping the turn for those (the loop's iteration count had moved) measured worse at c=64, p99 95
    against 64 ms and 7% fewer requests a second, as each such connection's next read then came before the
    others' and mostly found nothing yet."""
    import gevent

    def take_turns(self, listener_name, req, sock, addr):
        handle_request(self, listener_name, req, sock, addr)
        try:
            take_turn()
        except gevent.GreenletExit:
            # A stopping worker killing its handlers: close the connection as gunicorn does when a response
            # asks to, not through its error path, which would log an error and write a 500 after the answer.
            raise StopIteration from None
    take_turns.unpatched = handle_request
    return take_turns


def install(client_timeout=None):
    global _client_timeout
    _client_timeout = client_timeout
    ggevent = sys.modules.get("gunicorn.workers.ggevent")  # loaded in a gevent worker only
    if ggevent is not None and not hasattr(ggevent.StreamServer, "unpatched"):
        ggevent.StreamServer = _accepting(ggevent.StreamServer)
    if ggevent is not None and not hasattr(ggevent.GeventWorker.handle_request, "unpatched"):
        ggevent.GeventWorker.handle_request = _taking_turns(ggevent.GeventWorker.handle_request)
    wsgi.Response = Response
    if not hasattr(util.http_date, "unmemoized"):
        util.http_date = _date_memo(util.http_date)
    util.write_error = write_error
    original = getattr(message, "_ip_in_allow_list", None)  # gunicorn 27; older ones parse inline
    if original is not None and not hasattr(original, "unmemoized"):
        message._ip_in_allow_list = _peer_memo(original)
