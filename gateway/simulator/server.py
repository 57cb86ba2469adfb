"""Serving the simulator: gevent's pywsgi with a handler that can drop connections on purpose.

`serve()` blocks; `main()` is the CLI (`python -m gateway.simulator`, later `gateway simulate`);
`spawn_process()` starts one in a child process for tests, so no gevent hub runs in the caller.
"""
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

from .app import make_app
from .faults import Abort, drop_connection
from .options import SimOptions, options_from_args

READY_PREFIX = "simulator listening on "


class SimHandler(WSGIHandler):
    """pywsgi's handler, plus: the app can reach it (`environ['sim.handler']`) and raise `Abort`."""

    def get_environ(self):
        env = super().get_environ()
        env["sim.handler"] = self
        return env

    def handle(self):
        try:  # stream events must leave one by one, not wait for an ACK (Nagle)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle()

    def handle_one_request(self):
        result = super().handle_one_request()
        # A keep-alive client that sends its next request at once never makes recv() block, so this
        # greenlet would serve it forever while other connections starve (p99 in the 100s of ms).
        gevent.sleep(0)
        return result

    def run_application(self):
        try:
            super().run_application()
        except Abort as abort:
            drop_connection(self, abort.rst)

    def _write_with_headers(self, data):
        # One send for status line + headers + first chunk instead of two.
        self.headers_sent = True
        self.finalize_headers()
        out = bytearray(b"HTTP/1.1 ")
        out += self.status
        out += b"\r\n"
        for header, value in self.response_headers:
            out += header + b": " + value + b"\r\n"
        out += b"\r\n"
        if data:
            if self.response_use_chunked:
                out += b"%x\r\n" % len(data) + data + b"\r\n"
            else:
                out += data
        self._sendall(out)


def serve(host="127.0.0.1", port=0, options=None, ready=None):
    """Serve forever. `ready(port)` is called once the socket is bound (port 0 = any free port)."""
    options = options or SimOptions(host=host, port=port)
    server = WSGIServer((host, port), make_app(options), handler_class=SimHandler, log=None,
                        environ={"SERVER_NAME": host}, backlog=1024)
    server.init_socket()
    bound = server.socket.getsockname()[1]
    if ready is not None:
        ready(bound)
    server.serve_forever()


def main(argv=None):
    options = options_from_args(argv)

    def announce(port):
        print(f"{READY_PREFIX}http://{options.host}:{port}", flush=True)

    try:
        serve(options.host, options.port, options, announce)
    except KeyboardInterrupt:
        pass
    return 0


def spawn_process(options_args=(), timeout=15.0):
    """Start `python -m gateway.simulator --port 0 ARGS...`; return `(Popen, base_url)` once it listens.

    `base_url` has no path: append `/v1` for OPENAI_BASE_URL, use it as is for the Anthropic and
    Gemini base URLs. The caller terminates the process.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    args = list(options_args)
    if "--port" not in args:
        args = ["--port", "0"] + args
    proc = subprocess.Popen([sys.executable, "-m", "gateway.simulator", *args], stdout=subprocess.PIPE,
                            cwd=root, env=env, text=True)
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            line = proc.stdout.readline()
            if line.startswith(READY_PREFIX):
                return proc, line[len(READY_PREFIX):].strip()
            if not line and proc.poll() is not None:
                break
    proc.kill()
    proc.wait()
    raise RuntimeError(f"simulator did not start (exit {proc.returncode}, last line {line!r})")
