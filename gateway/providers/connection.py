"""Upstream connections that send a request's head and body together.

urllib3 2 writes a request in two sends: the head (`endheaders`), then the body. On a kept-alive connection
that is two system calls and two TCP segments (two TLS records on https) for every upstream call, and the
upstream wakes twice: timed here at ~1 ms for the send alone on loopback, before the upstream could start
its answer. These connections keep the head and send it with the first body bytes; a request without a
body sends its head when its response is asked for. The bytes on the wire are the same.
"""
from urllib3.connection import HTTPConnection, HTTPSConnection


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
    pass


class TLSConnection(_HeadWithBody, HTTPSConnection):
    pass
