"""Upstream connections that send a request's head and body together, and read the answer's headers fast.

urllib3 2 writes a request in two sends: the head (`endheaders`), then the body. On a kept-alive connection
that is two system calls and two TCP segments (two TLS records on https) for every upstream call, and the
upstream wakes twice: timed here at ~1 ms for the send alone on loopback, before the upstream could start
its answer. These connections keep the head and send it with the first body bytes; a request without a
body sends its head when its response is asked for. The bytes on the wire are the same.

http.client reads a response's headers through the e-mail parser: ~78 µs for the ~23 headers OpenAI answers
with, against ~8 µs for splitting each line at its colon. `Response` is http.client's own response with only
that step replaced (`_headers`); anything the split would not read exactly as the e-mail parser does (a folded
line, a line with no name, a stray CR, a byte outside ASCII) goes to the e-mail parser as before.
"""
import email.parser
import http.client
import re
import select
import types

from gevent.monkey import get_original
from urllib3.connection import HTTPConnection, HTTPSConnection

# The kernel's poll, even where gevent has patched the select module (see `is_connected`).
_poll = get_original("select", "poll")

# A header line the e-mail parser reads as `name: value` with nothing else to it (its own headerRE, less the
# forms that start a folded line or the body): an ASCII name of printable characters other than the colon.
_PLAIN_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[\x20-\x7e\t]*\r?\n")


def _headers(fp, _class=http.client.HTTPMessage):
    """http.client.parse_headers, the same HTTPMessage for the same bytes, without the e-mail parser when every
    line is plain."""
    lines = http.client._read_headers(fp)
    msg = _class()
    msg.set_payload("")  # what the e-mail parser leaves after a head with no body
    for line in lines[:-1]:  # the last is the blank line (or b"" at the end of the stream)
        if not _PLAIN_LINE.fullmatch(line):
            return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))
        name, _, value = line.decode("ascii").partition(":")
        msg._headers.append((name, value.lstrip(" \t").rstrip("\r\n")))  # as the compat32 policy stores it
    return msg


def _begin_with_fast_headers():
    """http.client's own `begin`, run with `_headers` where its module has `parse_headers`: the status line,
    1xx answers, framing and keep-alive stay exactly what this Python's http.client does. None if this
    Python's `begin` does not read its headers through that global (or needs a closure), so that a future
    http.client cannot be run wrongly: the stock response is used then."""
    code = http.client.HTTPResponse.begin.__code__
    if "parse_headers" not in code.co_names or code.co_freevars:
        return None
    return types.FunctionType(code, {**vars(http.client), "parse_headers": _headers}, "begin")


_FAST_BEGIN = _begin_with_fast_headers()


class _FastHeadersResponse(http.client.HTTPResponse):
    begin = _FAST_BEGIN


Response = _FastHeadersResponse if _FAST_BEGIN is not None else http.client.HTTPResponse


class _HeadWithBody:
    _holding = False
    _head = None

    def endheaders(self, message_body=None, *, encode_chunked=False):
        self._holding = True
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)
        finally:
            self._holding = False

    def send(self, data):
        if self._holding and isinstance(data, bytes):
            self._head = data if self._head is None else self._head + data
            return
        head, self._head = self._head, None
        if head is not None:
            if isinstance(data, (bytes, bytearray)):
                data = head + data
            else:
                super().send(head)  # a file or an iterable: http.client reads it in blocks
        super().send(data)

    @property
    def is_connected(self):
        """What urllib3 asks before it reuses a pooled connection: whether the upstream has closed it (the socket
        is readable). urllib3 polls with a zero timeout; under gevent that poll is gevent's, which builds,
        starts and stops watchers for a call that never waits (~4% of an upstream call's CPU). The kernel's
        poll gives the same answer at once, and with a zero timeout it cannot block the event loop."""
        if self.sock is None:
            return False
        poller = _poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def getresponse(self, *args, **kwargs):
        self._send_head()
        return super().getresponse(*args, **kwargs)

    def close(self):
        self._head = None
        super().close()

    def _send_head(self):
        head, self._head = self._head, None
        if head is not None:
            super().send(head)


class Connection(_HeadWithBody, HTTPConnection):
    response_class = Response


class TLSConnection(_HeadWithBody, HTTPSConnection):
    response_class = Response
