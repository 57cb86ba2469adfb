"""The streaming half of `make bench`, over plain sockets (no HTTP library in the timed path, no gevent).

`sequential()` times streams one after another (first `data:` event and the whole stream); `hold()` opens
many at once with one selector loop and counts how many finish cleanly.
"""
import errno
import selectors
import socket
import time


def request_bytes(host, port, path, key, body):
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body


def _status(buf):
    line = buf.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


def _first_event(buf):
    head_end = buf.find(b"\r\n\r\n")
    return head_end >= 0 and buf.find(b"data: ", head_end) >= 0


def _ok(buf):
    # An error after the headers arrives as a `data: {"error": ...}` event, never as a clean [DONE].
    return _status(buf) == 200 and b"data: [DONE]" in buf and b'{"error"' not in buf


def _connect(host, port, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _timed(s, raw, start, done):
    """Send one request on `s` and read until `done(buf)` or the end: (ttfb_s, total_s, ok), from `start`."""
    buf, ttfb = b"", None
    s.sendall(raw)
    while not done(buf):
        data = s.recv(65536)
        if not data:
            break
        buf += data
        if ttfb is None and _first_event(buf):
            ttfb = time.perf_counter() - start
    total = time.perf_counter() - start
    return ttfb if ttfb is not None else total, total, _ok(buf)


def sequential(host, port, path, key, body, n, timeout=30.0):
    """n streams one after another, each on a new connection: [(ttfb_s, total_s, ok)]."""
    raw = request_bytes(host, port, path, key, body)
    out = []
    for _ in range(n):
        start = time.perf_counter()   # the connection's set-up counts
        with _connect(host, port, timeout) as s:
            out.append(_timed(s, raw, start, lambda buf: False))
    return out


def _response_done(buf):
    """Whether `buf` holds one whole HTTP/1.1 response (chunked, or with a Content-Length)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = buf[:head_end].lower()
    if b"transfer-encoding: chunked" in head:
        return buf.endswith(b"\r\n0\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:")),
                  0)
    return len(buf) - head_end - 4 >= length


def sequential_reused(host, port, path, key, body, n, timeout=30.0):
    """n streams one after another on one kept-alive connection, as an SDK's connection pool sends them:
    [(ttfb_s, total_s, ok)]."""
    raw = request_bytes(host, port, path, key, body).replace(b"Connection: close\r\n", b"")
    with _connect(host, port, timeout) as s:
        return [_timed(s, raw, time.perf_counter(), _response_done) for _ in range(n)]


class _Conn:
    __slots__ = ("sock", "out", "buf", "started", "first", "done", "error")

    def __init__(self, sock, out):
        self.sock, self.out, self.buf = sock, out, b""
        self.started, self.first, self.done, self.error = time.monotonic(), None, None, None


def hold(host, port, path, key, body, count, per_second, deadline_s, sample=None, sample_every=0.5):
    """Open `count` streams at `per_second`, read all of them to the end in one selector loop.

    `sample()` is called every `sample_every` seconds while streams are open (e.g. to read the gateway's
    memory). Returns a dict: ok, failed, the most open at once (the first event seen, not yet ended),
    the slowest first event, errors by kind.
    """
    raw = request_bytes(host, port, path, key, body)
    sel = selectors.DefaultSelector()
    conns, opened, open_now, peak = [], 0, 0, 0
    start = time.monotonic()
    end_by = start + deadline_s
    next_sample = start
    errors = {}

    def finish(c, error=None):
        nonlocal open_now
        if c.first is not None and c.done is None:
            open_now -= 1
        c.done = time.monotonic()
        c.error = error
        if error:
            errors[error] = errors.get(error, 0) + 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while time.monotonic() < end_by:
        now = time.monotonic()
        due = min(count, int((now - start) * per_second) + 1)
        while opened < due:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            c = _Conn(s, raw)
            conns.append(c)
            opened += 1
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                finish(c, f"connect:{errno.errorcode.get(err, err)}")
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        if sample is not None and now >= next_sample:
            sample(open_now)
            next_sample = now + sample_every
        if opened == count and all(c.done is not None for c in conns):
            break
        for skey, mask in sel.select(timeout=0.05):
            c = skey.data
            if mask & selectors.EVENT_WRITE:
                try:
                    sent = c.sock.send(c.out)
                except OSError as e:
                    finish(c, f"send:{errno.errorcode.get(e.errno, e.errno)}")
                    continue
                c.out = c.out[sent:]
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                finish(c, f"recv:{errno.errorcode.get(e.errno, e.errno)}")
                continue
            if not data:
                finish(c, None if _ok(c.buf) else f"status {_status(c.buf)} or no [DONE]")
                continue
            c.buf += data
            if c.first is None and _first_event(c.buf):
                c.first = time.monotonic()
                open_now += 1
                peak = max(peak, open_now)
    for c in conns:
        if c.done is None:
            finish(c, "not finished in time")
    sel.close()
    firsts = sorted(c.first - c.started for c in conns if c.first is not None)
    failed = sum(1 for c in conns if c.error)
    return {"streams": count, "ok": count - failed, "failed": failed, "peak_open": peak,
            "errors": errors, "seconds": round(time.monotonic() - start, 2),
            "first_event_p50_ms": round(firsts[len(firsts) // 2] * 1000, 1) if firsts else None,
            "first_event_max_ms": round(firsts[-1] * 1000, 1) if firsts else None}
