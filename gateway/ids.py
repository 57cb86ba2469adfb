"""Random identifiers for the request path (request ids, completion and tool-call ids, rate-limit members),
drawn from the operating system's CSPRNG in batches.

`secrets.token_hex` asks the kernel for a few bytes on every call: a getrandom system call per id, two or three
per request, ~6% of a cache hit's CPU here (a system call is dear under a hypervisor). These come from the
same `os.urandom`, 4 KB at a time, and each byte is handed out once. A forked child starts on a fresh batch,
so two workers never hand out the same bytes. API keys are not made here: store/keys.py asks `secrets`.
"""
import base64
import os
import threading

_BATCH = 4096
_lock = threading.Lock()
_buf = b""
_pos = 0


def _forget():
    global _buf, _pos
    _buf, _pos = b"", 0


os.register_at_fork(after_in_child=_forget)


def token_bytes(n):
    global _buf, _pos
    with _lock:
        pos = _pos
        if pos + n > len(_buf):
            _buf, pos = os.urandom(max(_BATCH, n)), 0
        _pos = pos + n
        return _buf[pos:pos + n]


def token_hex(n):
    return token_bytes(n).hex()


def token_urlsafe(n):
    return base64.urlsafe_b64encode(token_bytes(n)).rstrip(b"=").decode("ascii")
