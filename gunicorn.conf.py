"""gunicorn settings, all in one place (the Procfile, `make run` and `gateway serve` use this file)."""
import os
import sys

# Two interpreter settings, chosen before anything is loaded, which a worker's memory depends on. Each can only
# be set before Python starts, so gunicorn starts again, once, the same way, with them in its environment; set
# either yourself to choose otherwise. (Under -E or -I Python ignores them: nothing to gain there. If the exec
# fails, gunicorn goes on.)
# - PYTHONMALLOC=malloc: the C library's allocator, not Python's own. Python's returns a 1 MB arena to the system
#   only once every object in it is gone, and the few objects a burst leaves behind (a lazily made metric, a cache
#   entry) are spread over all of them: after 1,000 streams a worker kept ~35 MB it no longer used, whatever it
#   did. glibc's malloc_trim gives free pages back wherever they are (gateway/memory.py). The price is CPU: in
#   interleaved runs at c=64 (2026-11-27) the workers used 6-12% less CPU a request with pymalloc; but the bench's
#   RSS 12 s after its streams was 100 MB a worker with pymalloc (and with mimalloc), 77 MB with this. (`pymalloc`
#   for Python's own.)
# - PYTHONOPTIMIZE=2: no docstrings in memory (nor asserts; the gateway's code has none). Every module a worker
#   loads keeps its docstrings otherwise, ~800 modules: a worker starts 5 MB smaller (70.8 -> 65.8 MB here) and
#   settles after the bench's load at 77.1 MB, against 81.3. `make install` compiles the dependencies at this level; elsewhere the
#   first start compiles them, or every start where bytecode is not written. (`0` to keep them.)
_INTERPRETER = {"PYTHONMALLOC": "malloc", "PYTHONOPTIMIZE": "2"}
_unset = {name: value for name, value in _INTERPRETER.items() if name not in os.environ}
if __name__ == "__config__" and _unset and not sys.flags.ignore_environment:
    os.environ.update(_unset)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as e:
        for name in _unset:
            del os.environ[name]
        sys.stderr.write(f"gateway: could not restart with {', '.join(_unset)} set ({e}); going on without\n")


def _master_module(name):
    """gateway/<name>.py, run from its file: `import gateway.config` would first run gateway/__init__.py, which
    imports the whole app (ssl and urllib3 among it) into the master, before gevent patches anything, and every
    worker would inherit them. The modules loaded so import only the standard library."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gateway", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"gateway_{name}_for_gunicorn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Validated as the app's settings are: a bad one stops the master with one line naming it.
_config = _master_module("config")
try:
    _serving = _config.serving()
except _config.ConfigError as e:
    sys.stderr.write(f"gateway: configuration error: {e}\n")
    sys.exit(4)

bind = f"0.0.0.0:{_serving.port}"
# Without Redis the cache and the rate limits live in each process, and a limit is exact only in one:
# one worker then, unless WEB_CONCURRENCY says otherwise (the start-up check warns about it).
workers = _serving.workers
worker_class = "gevent"
# Each open stream holds a connection for its whole life: leave room for thousands per worker.
worker_connections = _serving.worker_connections
# gevent workers heartbeat from their event loop, so a long healthy stream never trips this.
timeout = _serving.worker_timeout
graceful_timeout = _serving.graceful_timeout
# Idle keep-alive connections hold a worker's graceful stop until they time out: keep them short.
# (nginx reconnects at no cost; see deploy/nginx.conf.)
keepalive = _serving.keepalive
# Recycle a worker now and then (a long-lived process's fragmentation); its streams finish first.
max_requests = _serving.max_requests
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0
forwarded_allow_ips = os.environ.get("GATEWAY_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("GATEWAY_ACCESS_LOG", "-") or None
access_log_format = ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
errorlog = "-"
loglevel = _serving.log_level.lower()
preload_app = False


# Prometheus multiprocess mode: every worker writes its metrics to files in one directory, which
# /metrics sums. The directory is made fresh when the master starts, before any worker imports
# prometheus_client, and removed when that master exits. GATEWAY_METRICS_DIR_OWNER says which master made
# it: this file runs again in the same master on SIGHUP (keep the directory), and a master started by
# SIGUSR2 inherits the variables of its parent, which removes its directory when it exits (make another).
# A directory set by the operator is never made or removed here.
def _make_metrics_dir():
    import atexit
    import tempfile
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["GATEWAY_METRICS_DIR_OWNER"] = str(os.getpid())
    # atexit, not gunicorn's on_exit hook: on_exit is not called when start-up fails (the schema check in
    # when_ready, a port in use), and every exit of the master goes through sys.exit. Workers are forked
    # with this handler: only the master that made the directory removes it.
    atexit.register(_remove_metrics_dir, path, os.getpid())


def _remove_metrics_dir(path, owner):
    if os.getpid() == owner:
        import shutil
        shutil.rmtree(path, ignore_errors=True)


if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") or \
        os.environ.get("GATEWAY_METRICS_DIR_OWNER", str(os.getpid())) != str(os.getpid()):
    _make_metrics_dir()


# Each worker publishes how many client connections it holds and takes only its fair share of new ones
# (gateway/balance.py). The table is the master's (kept on the arbiter, which outlives a SIGHUP's
# reload of this file); a worker gets its slot before it is forked and gives it back when it exits.
def pre_fork(server, worker):
    table = getattr(server, "gateway_connections", None)
    if table is None:
        table = server.gateway_connections = _master_module("balance").Table()
    taken = {getattr(w, "gateway_slot", None) for w in server.WORKERS.values()}
    worker.gateway_connections, worker.gateway_slot = table, table.give(taken)


def _free_slot(worker):
    slot, table = getattr(worker, "gateway_slot", None), getattr(worker, "gateway_connections", None)
    if slot is not None and table is not None:
        table.free(slot)


def child_exit(server, worker):
    _free_slot(worker)  # first: the others must not leave connections to a dead worker if what follows fails
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """A stopping worker gives back its slot (gateway/balance.py; gunicorn also calls this in the master for a
    worker that vanished unreaped), then writes out the request logs it still holds (to the database or the
    spool) and the metrics it has counted since its last flush."""
    _free_slot(worker)
    app = getattr(worker, "wsgi", None)
    gateway = getattr(app, "extensions", {}).get("gateway") if app is not None else None
    if gateway is not None:
        from gateway import metrics
        metrics.TALLY.flush()
        gateway.log_writer.stop(timeout=10)


def post_worker_init(worker):
    """Each worker sends a response's head with its first body bytes and takes its share of new connections
    (gateway/serving.py, gateway/balance.py), and leaves what it loaded out of its garbage collections
    (gateway/memory.py)."""
    from gateway import balance, memory, serving
    serving.install(_serving.client_timeout)
    if getattr(worker, "gateway_slot", None) is not None:
        balance.join(worker.gateway_connections, worker.gateway_slot)
    memory.freeze_loaded()


def when_ready(server):
    """Check keys, database and Redis once, before taking traffic; stop with a clear message if the
    schema is old. In a child process: importing the app's libraries here, in the master, would load
    ssl and urllib3 into every worker before gevent patches them."""
    import subprocess
    import sys
    if subprocess.run([sys.executable, "-m", "gateway.startup"]).returncode != 0:
        server.log.error("gateway cannot start: see the message above")
        raise SystemExit(4)


# The access log line, written straight for the format above. gunicorn's own path builds a dict of every
# request header, response header and environ variable (and escapes each) for a line that reads six of
# them: ~6% of a cache hit's CPU. The line is the same (a test compares them) and goes through the same
# logger and handlers; another access_log_format (GUNICORN_CMD_ARGS, say) takes gunicorn's path.
def _access_logger_class():
    from gunicorn import glogging

    def esc(value):
        return value.replace('"', '\\"')

    class AccessLogger(glogging.Logger):
        def access(self, resp, req, environ, request_time):
            if self.cfg.access_log_format != ACCESS_LOG_FORMAT:
                return super().access(resp, req, environ, request_time)
            if not self.access_log_enabled:
                return
            status = resp.status
            if isinstance(status, str):
                status = status.split(None, 1)[0]
            sent = getattr(resp, "sent", None)
            request_id = next((v for k, v in resp.headers if k.lower() == "x-request-id"), "-")
            line = '%s "%s" %s %s %sms request_id=%s' % (
                esc(environ.get("REMOTE_ADDR", "-")),
                esc(f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"),
                esc(status) if isinstance(status, str) else status,
                sent is not None and str(sent) or "-",
                request_time.seconds * 1000 + int(request_time.microseconds / 1000),
                esc(request_id) if isinstance(request_id, str) else request_id)
            try:
                self.access_log.info("%s", line)
            except Exception:  # noqa: BLE001 - as gunicorn does: a log line never fails a request
                import traceback
                self.error(traceback.format_exc())

    return AccessLogger


logger_class = _access_logger_class()
