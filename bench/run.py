"""`make bench`: start a simulator, PostgreSQL database, Redis namespace and gunicorn gateway of the bench's own,
load them with wrk and a small stream client, and write bench/results/report.md and report.json.

Every figure is the median of RUNS runs (after a warm-up). CPU is read from /proc/<pid>/stat (utime + stime):
"gateway" is the gunicorn master and its workers; "stack" adds every postgres and redis-server process. The
load generator, the simulator and the gateway share the machine's cores (nothing is pinned), so the machine's
total CPU use is reported beside each figure. Everything started here is stopped on the way out, whatever
happens (Ctrl-C included), and the database and Redis keys are removed.
"""
import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import ab
import streams
from procstat import (TICK, by_name, cpu_delta_ms, cpu_ticks, held_per_worker, machine_ticks, rss_mb,
                      speed_probe, tree)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
GATEWAY_CMD = os.path.join(os.path.dirname(PY), "gateway")
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Summarise the benefits of a gateway in front of LLM providers."}]

# The logging A/B again with an upstream that answers as a short LLM call does, after this long: 64 requests in
# flight then leave the gateway's cores partly idle, where the instant simulator saturates them.
PACED_MS = 250

# name: (what, target, unit, lower_is_better)
TARGETS = {
    "upstream_gateway_cpu_ms": ("gateway CPU per request, upstream call (c=64)", 1.0, "ms", True),
    "cache_gateway_cpu_ms": ("gateway CPU per request, cache hit (c=64)", 0.5, "ms", True),
    "upstream_stack_cpu_ms": ("whole-stack CPU per request, upstream call (c=64)", 1.5, "ms", True),
    "cache_stack_cpu_ms": ("whole-stack CPU per request, cache hit (c=64)", 0.8, "ms", True),
    "upstream_rps_c64": ("throughput at c=64, upstream call", 1000, "req/s", False),
    "cache_rps_c64": ("throughput at c=64, cache hit", 2000, "req/s", False),
    "added_p50_c1": ("added latency at c=1, p50 (gateway − direct)", 1.5, "ms", True),
    "added_p99_c1": ("added latency at c=1, p99 (gateway − direct)", 5.0, "ms", True),
    "cache_p50_c1": ("cache hit end to end at c=1, p50", 2.0, "ms", True),
    "stream_added_ttfb": ("stream: added time to first event (median)", 2.0, "ms", True),
    "streams_failed": ("2,000 concurrent streams: failures", 0, "", True),
    "rss_settled_mb": ("RSS per worker 12 s after load (largest worker)", 80, "MB", True),
    "logging_p50_pct": ("request logs: p50 with logging on vs off (c=64, A/B)", 5.0, "%", True),
    "logging_p99_pct": ("request logs: p99 with logging on vs off (c=64, A/B)", 5.0, "%", True),
    "logging_paced_p50_pct": (f"request logs: p50 on vs off, c=64, upstream answering in {PACED_MS} ms", 5.0, "%",
                              True),
    "logging_paced_p99_pct": (f"request logs: p99 on vs off, c=64, upstream answering in {PACED_MS} ms", 5.0, "%",
                              True),
}


# ---------------------------------------------------------------- processes

class Procs:
    """Every process the bench starts, each in its own session, so a whole group can be signalled."""

    def __init__(self):
        self.procs = []

    def start(self, args, log_path, env=None):
        log = open(log_path, "ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc, timeout=15):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the group (a worker that outlived its master)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_for_line(path, prefix, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{prefix!r} not seen in {path}")


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = Procs()
        self.token = secrets.token_hex(4)
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="gateway-bench-")
        self.db_name = f"gateway_bench_{self.token}"
        self.prefix = f"gwbench:{self.token}:"
        self.db_url = None
        self.gunicorn = None
        self.results = {"runs": args.runs, "seconds_per_run": args.duration, "warmup_seconds": args.warmup}
        self.notes = []

    # ------------------------------------------------------------ set-up and tear-down

    def create_db(self):
        import psycopg2
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.db_name}"')
        admin.close()
        self.db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.gateway_cli("db", "upgrade")

    def drop_db(self):
        if self.db_url is None:
            return
        import psycopg2
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        admin.close()
        self.db_url = None

    def clean_redis(self):
        import redis
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            client.delete(*keys)

    def base_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "PROMETHEUS_"))}
        env["PYTHONPATH"] = ROOT
        env["DATABASE_URL"] = self.db_url or ""
        return env

    def gateway_cli(self, *args):
        out = subprocess.run([GATEWAY_CMD, *args], cwd=ROOT, env=self.base_env(), capture_output=True, text=True,
                             timeout=60)
        if out.returncode:
            raise RuntimeError(f"gateway {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout

    def create_key(self, name, cache):
        out = self.gateway_cli("keys", "create", "--name", name, *([] if cache else ["--no-cache"]))
        return out.strip().splitlines()[-1]

    def start_simulator(self, name, *args):
        log = os.path.join(self.out, f"simulator-{name}.log")
        open(log, "w").close()
        proc = self.procs.start([PY, "-u", "-m", "gateway.simulator", "--port", "0", *args], log, self.base_env())
        return proc, wait_for_line(log, "simulator listening on ", proc)

    def start_gateway(self, name, upstream=None, **extra):
        port = free_port()
        env = self.base_env()
        fast, slow = upstream or self.sim_url, self.slow_url
        config = os.path.join(self.tmp, "gateway.toml")
        with open(config, "w") as f:  # a second OpenAI-compatible provider: the slow simulator, for held streams
            f.write(f'[providers.slowsim]\nkind = "openai"\nbase_url = "{slow}/v1"\napi_key_env = "BENCH_SLOW_KEY"\n')
        env.update({
            "PORT": str(port), "WEB_CONCURRENCY": "2", "REDIS_URL": REDIS_URL, "GATEWAY_REDIS_PREFIX": self.prefix,
            "OPENAI_BASE_URL": fast + "/v1", "ANTHROPIC_BASE_URL": fast, "GEMINI_BASE_URL": fast,
            "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-ant-bench", "GEMINI_API_KEY": "AIza-bench",
            "BENCH_SLOW_KEY": "sk-bench-slow", "GATEWAY_CONFIG": config,
            "GATEWAY_ACCESS_LOG": "", "GATEWAY_GRACEFUL_TIMEOUT": "10", "GATEWAY_LOG_LEVEL": "WARNING",
            # No recycling mid-bench: a fresh worker would restart its warm-up, and "RSS after load" must be
            # the RSS of the worker that took the load.
            "GATEWAY_MAX_REQUESTS": "0",
            "GATEWAY_INSTANCE_DIR": self.tmp, "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(dir=self.tmp),
        })
        env.update(extra)
        log = os.path.join(self.out, f"gunicorn-{name}.log")
        open(log, "w").close()
        proc = self.procs.start([PY, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], log, env)
        base = f"http://127.0.0.1:{port}"
        self.wait_healthy(proc, base, log)
        self.gunicorn, self.gw_url, self.gw_port = proc, base, port
        return proc

    def wait_healthy(self, proc, base, log):
        """Until gunicorn at `base` answers /healthz with both its workers up; RuntimeError if it exits or takes
        more than 30 s."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {proc.returncode}; see {log}")
            try:
                if http("GET", base + "/healthz", timeout=1)[0] == 200 and len(self.workers(proc)) == 2:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not become healthy; see {log}")

    def echo_yardstick(self, body):
        """The bare Flask + gevent echo (bench/echo.py) at the top concurrency, measured as the gateway is: what
        this machine gives the simplest such service right now."""
        port = free_port()
        env = {**self.base_env(), "PYTHONPATH": HERE}
        log = os.path.join(self.out, "gunicorn-echo.log")
        open(log, "w").close()
        proc = self.procs.start([PY, "-m", "gunicorn", "-k", "gevent", "-w", "2", "-b", f"127.0.0.1:{port}",
                                 "echo:app"], log, env)
        base = f"http://127.0.0.1:{port}"
        self.wait_healthy(proc, base, log)
        kept = self.gunicorn
        self.gunicorn = proc
        try:
            return {str(max(self.args.concurrency)): self.measure("bare Flask + gevent echo", base +
                                                                  "/v1/chat/completions", max(self.args.concurrency),
                                                                  "unused", body)}
        finally:
            self.gunicorn = kept
            self.procs.stop(proc)

    def workers(self, proc=None):
        proc = proc or self.gunicorn
        return sorted(tree(proc.pid) - {proc.pid})

    def close(self):
        errors = []
        for step in (self.procs.stop_all, self.drop_db, self.clean_redis):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - do every step, report every failure
                errors.append(f"{step.__name__}: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        for e in errors:
            print("cleanup:", e, file=sys.stderr)

    # ------------------------------------------------------------ load

    def settle(self, url, limit=5.0):
        """Until the gateway's workers hold no connection to `url`'s port, at most `limit` seconds. A wrk run ends
        by closing all its connections, and a saturated worker takes a loop round, or a whole request, to let each
        go: a burst of new ones meeting them is split as if those were still clients (gateway/balance.py)."""
        if self.gunicorn is None or self.gunicorn.poll() is not None:
            return
        port = int(url.split(":")[2].split("/")[0])
        workers = sorted(tree(self.gunicorn.pid) - {self.gunicorn.pid})
        deadline = time.monotonic() + limit
        # Every TCP state but LISTEN (0A): established, closing, waiting to be closed.
        states = tuple(f"{n:02X}" for n in range(1, 12) if n != 10)
        while sum(held_per_worker(workers, port, states)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def wrk(self, url, concurrency, seconds, key, body):
        """`body` with "{n}" in it: each request sends its own number there (see post.lua)."""
        env = {**os.environ, "BENCH_BODY": body, "BENCH_KEY": key}
        if "{n}" in body:
            env["BENCH_VARY"] = "1"
        args = ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s", "--latency",
                "-s", os.path.join(HERE, "post.lua"), url]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        text = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-1500:]}")
        out = json.loads(line[6:])
        out["wrk_cpu_ms"] = (usage.ru_utime + usage.ru_stime) * 1000
        # The figures every caller reports, in its units.
        out["figures"] = {"rps": out["requests"] / (out["duration_us"] / 1e6), "p50_ms": out["p50_us"] / 1000,
                          "p99_ms": out["p99_us"] / 1000, "requests": out["requests"],
                          "errors": sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))}
        return out

    def measure(self, name, url, concurrency, key, body, gateway=True):
        """Warm up, then RUNS runs: the median of each figure, and every run's figures."""
        if gateway:
            self.settle(url)
        self.wrk(url, concurrency, self.args.warmup, key, body)
        runs = []
        for _ in range(self.args.runs):
            if gateway:
                self.settle(url)
            gw_pids = tree(self.gunicorn.pid) if gateway else set()
            stack_pids = by_name("postgres", "redis-server")
            sim_pids = {self.sim.pid}
            g0, s0, m0 = cpu_ticks(gw_pids), cpu_ticks(stack_pids), cpu_ticks(sim_pids)
            busy0, total0 = machine_ticks()
            split = []  # wrk's connections per worker, halfway through the run
            if gateway:
                port = int(url.split(":")[2].split("/")[0])
                workers = sorted(set(gw_pids) - {self.gunicorn.pid})
                sampler = threading.Timer(self.args.duration / 2,
                                          lambda: split.extend(held_per_worker(workers, port)))
                sampler.start()
            w = self.wrk(url, concurrency, self.args.duration, key, body)
            if gateway:
                sampler.join()
            busy1, total1 = machine_ticks()
            g1 = cpu_ticks(tree(self.gunicorn.pid) if gateway else set())
            s1, m1 = cpu_ticks(by_name("postgres", "redis-server")), cpu_ticks(sim_pids)
            n = max(1, w["requests"])
            gw_ms, stack_ms, sim_ms = cpu_delta_ms(g0, g1), cpu_delta_ms(s0, s1), cpu_delta_ms(m0, m1)
            per_worker = [cpu_delta_ms({p: g0.get(p, 0)}, {p: t}) for p, t in g1.items() if p != self.gunicorn.pid]
            machine_ms = (busy1 - busy0) * 1000.0 / TICK
            runs.append({
                **w["figures"],
                "gateway_cpu_ms": gw_ms / n if gateway else None,
                "stack_cpu_ms": (gw_ms + stack_ms) / n if gateway else None,
                "pg_redis_cpu_ms": stack_ms / n, "simulator_cpu_ms": sim_ms / n, "wrk_cpu_ms": w["wrk_cpu_ms"] / n,
                "machine_cpu_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
                # wrk opens its connections at once and whichever worker is awake accepts most of them
                "busiest_worker_pct": 100.0 * max(per_worker) / max(1e-9, sum(per_worker)) if gateway else None,
                "connections_per_worker": split,
                "other_cpu_ms": (machine_ms - gw_ms - stack_ms - sim_ms - w["wrk_cpu_ms"]) / n,
            })
        med = {k: (statistics.median(r[k] for r in runs) if runs[0][k] is not None else None) for k in runs[0]
               if k != "connections_per_worker"}
        med["errors"] = sum(r["errors"] for r in runs)
        med["runs"] = runs
        print(f"  {name:<28} c={concurrency:<3} {med['rps']:8.0f} req/s  p50 {med['p50_ms']:6.2f} ms  "
              f"p99 {med['p99_ms']:6.2f} ms  gw {fmt(med['gateway_cpu_ms'])} ms/req  "
              f"stack {fmt(med['stack_cpu_ms'])} ms/req  other {med['other_cpu_ms']:.2f} ms/req  "
              f"machine {med['machine_cpu_pct']:3.0f}%  "
              f"errors {med['errors']}", flush=True)
        return med

    def series(self, name, url, key, body, gateway=True):
        return {str(c): self.measure(name, url, c, key, body, gateway) for c in self.args.concurrency}

    def rss(self):
        return {str(pid): round(rss_mb(pid), 1) for pid in self.workers()}

    # ------------------------------------------------------------ the bench

    def run(self):
        a, r = self.args, self.results
        busy0, total0 = machine_ticks()
        time.sleep(1)
        busy1, total1 = machine_ticks()
        idle_busy = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
        r["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(),
                        "busy_pct_before": round(idle_busy, 1), "speed_probe_ms_before": speed_probe()}
        if idle_busy > 10:
            self.notes.append(f"The machine was {idle_busy:.0f}% busy before the bench started: other work shares "
                              "the cores; see the 'other CPU' column.")
        print("starting: database, simulators, gateway", flush=True)
        self.create_db()
        self.sim, self.sim_url = self.start_simulator("fast", "--tokens", str(a.tokens))
        self.slow, self.slow_url = self.start_simulator("slow", "--tokens", "20", "--tokens-per-second", "2")
        self.start_gateway("logging-on")
        up_key, cache_key = self.create_key("bench-upstream", cache=False), self.create_key("bench-cache", cache=True)
        body = json.dumps({"model": MODEL, "messages": MESSAGES})
        # Upstream calls each ask something of their own, as real ones do: a body seen before is not validated
        # again (handlers/chat.py), which only cache hits should be measured with.
        varied = json.dumps({"model": MODEL, "messages": [{**MESSAGES[0], "content": MESSAGES[0]["content"] +
                                                           " (request {n})"}]})
        status, headers, _ = http("POST", self.gw_url + "/v1/chat/completions", body.encode(),
                                  {"Authorization": f"Bearer {up_key}", "Content-Type": "application/json"})
        assert status == 200 and headers.get("X-Provider") == "openai", (status, headers)
        time.sleep(1)
        r["rss_idle_mb"] = self.rss()

        print(f"non-streaming {MODEL}: {a.runs} runs of {a.duration} s after {a.warmup} s of warm-up", flush=True)
        r["echo"] = self.echo_yardstick(body)
        r["direct"] = self.series("direct to simulator", self.sim_url + "/v1/chat/completions", "sk-bench", varied,
                                  gateway=False)
        r["upstream"] = self.series("gateway, upstream call", self.gw_url + "/v1/chat/completions", up_key, varied)
        for _ in range(2):  # prime: the second answer must come from the cache
            status, headers, _ = http("POST", self.gw_url + "/v1/chat/completions", body.encode(),
                                      {"Authorization": f"Bearer {cache_key}", "Content-Type": "application/json"})
        assert status == 200 and headers.get("X-Cache-Hit") == "exact", (status, headers)
        r["cache"] = self.series("gateway, cache hit", self.gw_url + "/v1/chat/completions", cache_key, body)

        r["rss_after_requests_mb"] = self.rss()
        # The writer inserts what the last runs logged; streams are timed on a quiet gateway, not beside it.
        r["writer_drain"] = self.wait_for_writer()
        print(f"  request log: {r['writer_drain']['rows']} rows in PostgreSQL, the last written "
              f"{r['writer_drain']['seconds']:.1f} s after the load stopped", flush=True)
        print(f"streams: {a.ttfb_streams} sequential each way (taking turns), {a.ttfb_streams} more on reused "
              f"connections, then {a.streams} held at once", flush=True)
        sbody = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()
        streams.sequential("127.0.0.1", self.gw_port, "/v1/chat/completions", up_key, sbody, 5)  # warm
        sim_port = int(self.sim_url.rsplit(":", 1)[1])
        # One direct, one through the gateway, in turn: a machine that slows down part-way slows both alike.
        direct, via = [], []
        for _ in range(a.ttfb_streams):
            direct += streams.sequential("127.0.0.1", sim_port, "/v1/chat/completions", "sk-bench", sbody, 1)
            via += streams.sequential("127.0.0.1", self.gw_port, "/v1/chat/completions", up_key, sbody, 1)
        # The same on one kept-alive connection each way, as an SDK's pool sends them (not a target: shown so the
        # cost of a new connection can be told apart from the cost of the request).
        reused_direct, reused_via = [], []
        for _ in range(max(1, a.ttfb_streams // 10)):
            reused_direct += streams.sequential_reused("127.0.0.1", sim_port, "/v1/chat/completions", "sk-bench",
                                                       sbody, 10)
            reused_via += streams.sequential_reused("127.0.0.1", self.gw_port, "/v1/chat/completions", up_key,
                                                    sbody, 10)
        med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
        r["stream_ttfb"] = {
            "direct_ttfb_ms": med([t for t, _, _ in direct]), "gateway_ttfb_ms": med([t for t, _, _ in via]),
            "direct_total_ms": med([t for _, t, _ in direct]), "gateway_total_ms": med([t for _, t, _ in via]),
            "reused_direct_ttfb_ms": med([t for t, _, _ in reused_direct]),
            "reused_gateway_ttfb_ms": med([t for t, _, _ in reused_via]),
            "failed": sum(1 for *_, ok in direct + via + reused_direct + reused_via if not ok),
        }
        st = r["stream_ttfb"]
        st["added_ttfb_ms"] = st["gateway_ttfb_ms"] - st["direct_ttfb_ms"]
        st["added_total_ms"] = st["gateway_total_ms"] - st["direct_total_ms"]
        st["reused_added_ttfb_ms"] = st["reused_gateway_ttfb_ms"] - st["reused_direct_ttfb_ms"]
        print(f"  first event: direct {st['direct_ttfb_ms']:.2f} ms, gateway {st['gateway_ttfb_ms']:.2f} ms; "
              f"whole stream: direct {st['direct_total_ms']:.2f} ms, gateway {st['gateway_total_ms']:.2f} ms; "
              f"first event on a reused connection: direct {st['reused_direct_ttfb_ms']:.2f} ms, "
              f"gateway {st['reused_gateway_ttfb_ms']:.2f} ms", flush=True)

        slow_body = json.dumps({"model": "slowsim/gpt-4o-mini", "messages": MESSAGES, "stream": True}).encode()
        peak = {"total_mb": 0.0, "per_worker_mb": {}, "open": 0}

        def sample(open_now):
            per = self.rss()
            total = sum(per.values())
            if total > peak["total_mb"]:
                peak.update(total_mb=round(total, 1), per_worker_mb=per, open=open_now)

        g0 = cpu_ticks(tree(self.gunicorn.pid))
        held = streams.hold("127.0.0.1", self.gw_port, "/v1/chat/completions", up_key, slow_body, a.streams,
                            per_second=a.streams_per_second, deadline_s=90, sample=sample)
        held["gateway_cpu_ms_per_stream"] = cpu_delta_ms(g0, cpu_ticks(tree(self.gunicorn.pid))) / a.streams
        held["rss_peak"] = peak
        r["held_streams"] = held
        print(f"  held: {held['ok']} ok, {held['failed']} failed, at most {held['peak_open']} open at once, "
              f"gateway RSS at peak {peak['total_mb']} MB ({peak['per_worker_mb']}) {held['errors'] or ''}",
              flush=True)
        time.sleep(2)
        r["rss_after_load_mb"] = self.rss()
        time.sleep(10)  # a worker quiet for a whole check interval gives freed heap back (gateway/memory.py)
        r["rss_settled_mb"] = self.rss()
        r["rows_logged"] = self.count_rows()
        self.procs.stop(self.gunicorn)

        top = max(a.concurrency)
        # p99 at saturation is the noisiest figure (a round's p99 ratio between identical gateways ranged from
        # -9% to +23%): twice the rounds of the paced A/B, whose cores are not saturated.
        rounds = 4 * a.runs
        print(f"logging on vs off (GATEWAY_LOG_REQUESTS), c={top} each: two gateways loaded at the same time, "
              f"{rounds} rounds", flush=True)
        r["logging"] = self.logging_ab(top, up_key, varied, rounds, ("on", "true"), ("off", "false"))
        print("control: two gateways with logging off, the same way (the method's noise)", flush=True)
        r["logging_control"] = self.logging_ab(top, up_key, varied, rounds, ("a", "false"), ("b", "false"))
        print(f"logging on vs off, c={top} each, upstream answering in {PACED_MS} ms", flush=True)
        paced, paced_url = self.start_simulator("paced", "--tokens", str(a.tokens), "--latency-ms", str(PACED_MS))
        try:
            r["logging_paced"] = self.logging_ab(top, up_key, varied, 2 * a.runs, ("on", "true"), ("off", "false"),
                                                 upstream=paced_url)
        finally:
            self.procs.stop(paced)

    def logging_ab(self, concurrency, key, body, rounds, *sides, upstream=None):
        """Two gateways, one for each (name, GATEWAY_LOG_REQUESTS) side, loaded together (see ab.py): half the
        rounds with a pair started in the order given, half with a fresh pair started the other way round."""
        runs = {name: [] for name, _ in sides}
        for half, order in enumerate((sides, sides[::-1])):
            gateways = {}
            try:
                for name, value in order:
                    self.start_gateway(f"ab-{name}", upstream=upstream, GATEWAY_LOG_REQUESTS=value)
                    gateways[name] = (self.gunicorn, self.gw_url)
                for name, got in ab.together(self, gateways, concurrency, key, body, rounds // 2,
                                             tag=f"h{half}").items():
                    runs[name] += got
            finally:
                for proc, _ in gateways.values():
                    self.procs.stop(proc)
        return ab.summary(runs, sides[0][0], sides[1][0])

    def wait_for_writer(self, quiet=1.0, limit=60.0):
        """Wait until no log row has arrived for `quiet` seconds: {rows, seconds} (seconds until the last)."""
        start = time.monotonic()
        rows, last_change = self.count_rows(), start
        while time.monotonic() - last_change < quiet and time.monotonic() - start < limit:
            time.sleep(0.1)
            now_rows = self.count_rows()
            if now_rows != rows:
                rows, last_change = now_rows, time.monotonic()
        return {"rows": rows, "seconds": round(last_change - start, 2)}

    def count_rows(self):
        import psycopg2
        with psycopg2.connect(self.db_url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM gateway_logs")
            return cur.fetchone()[0]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(v):
    return "—" if v is None else f"{v:.0f}%"


def fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


# ---------------------------------------------------------------- report

def figures(r):
    hi = str(max(int(c) for c in r["upstream"]))
    lo = str(min(int(c) for c in r["upstream"]))
    return {
        "upstream_gateway_cpu_ms": r["upstream"][hi]["gateway_cpu_ms"],
        "cache_gateway_cpu_ms": r["cache"][hi]["gateway_cpu_ms"],
        "upstream_stack_cpu_ms": r["upstream"][hi]["stack_cpu_ms"],
        "cache_stack_cpu_ms": r["cache"][hi]["stack_cpu_ms"],
        "upstream_rps_c64": r["upstream"][hi]["rps"],
        "cache_rps_c64": r["cache"][hi]["rps"],
        "added_p50_c1": r["upstream"][lo]["p50_ms"] - r["direct"][lo]["p50_ms"],
        "added_p99_c1": r["upstream"][lo]["p99_ms"] - r["direct"][lo]["p99_ms"],
        "cache_p50_c1": r["cache"][lo]["p50_ms"],
        "stream_added_ttfb": r["stream_ttfb"]["added_ttfb_ms"],
        "streams_failed": r["held_streams"]["failed"],
        "rss_settled_mb": max(r["rss_settled_mb"].values()),
        "logging_p50_pct": r["logging"]["paired"]["p50_ms"],
        "logging_p99_pct": r["logging"]["paired"]["p99_ms"],
        "logging_paced_p50_pct": r["logging_paced"]["paired"]["p50_ms"],
        "logging_paced_p99_pct": r["logging_paced"]["paired"]["p99_ms"],
    }


def verdicts(r):
    out = []
    for name, value in figures(r).items():
        what, target, unit, lower = TARGETS[name]
        met = value <= target if lower else value >= target
        if name == "streams_failed":
            met = met and r["held_streams"]["ok"] == r["held_streams"]["streams"]
        out.append({"name": name, "what": what, "value": value, "target": target, "unit": unit,
                    "op": "≤" if lower else "≥", "met": met})
    return out


def markdown(r, notes):
    v = verdicts(r)
    lines = ["# Gateway benchmark", "",
             f"2 gevent workers, PostgreSQL request logs on, Redis on; {r['machine']['cores']} cores shared by wrk, "
             f"the simulator, the gateway, PostgreSQL and Redis (nothing pinned). Each figure is the median of "
             f"{r['runs']} runs of {r['seconds_per_run']} s after {r['warmup_seconds']} s of warm-up.", "",
             f"Machine speed: a fixed pure-Python loop took {r['machine']['speed_probe_ms_before']} ms before the "
             f"bench and {r['machine']['speed_probe_ms_after']} ms after (lower is faster). CPU figures scale with "
             "it: compare runs only at similar probe times.", "",
             "## Targets", "", "| figure | value | target | met |", "|---|---:|---:|:---:|"]
    for x in v:
        val = f"{x['value']:.0f}" if x["unit"] in ("req/s", "") else f"{x['value']:.2f}"
        lines.append(f"| {x['what']} | {val} {x['unit']} | {x['op']} {x['target']} {x['unit']} | "
                     f"{'yes' if x['met'] else '**no**'} |")
    lines += ["", f"{sum(x['met'] for x in v)} of {len(v)} targets met.", "",
              "## Yardstick: a bare Flask + gevent JSON echo (bench/echo.py)", "",
              f"The simplest Flask + gevent JSON service on this machine, in this run: {yardstick(r)} (the issue "
              "puts the echo at 2,000-3,000 req/s here). A slow machine moves both; these ratios move only with the "
              "gateway.", "",
              "## Non-streaming, by concurrency", "",
              "CPU columns are milliseconds per request. *stack* = gateway + PostgreSQL + Redis; *other* = the "
              "machine's busy time not accounted to the gateway, PostgreSQL, Redis, the simulator or wrk; "
              "*busiest worker* = its share of the gateway's CPU (50% is an even split).", "",
              "| path | c | req/s | p50 ms | p99 ms | added p50 | added p99 | gateway CPU | stack CPU | "
              "simulator CPU | wrk CPU | other CPU | machine CPU | busiest worker | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, key in (("direct to simulator", "direct"), ("gateway, upstream call", "upstream"),
                       ("gateway, cache hit", "cache")):
        for c, m in r[key].items():
            d = r["direct"].get(c)
            added = (m["p50_ms"] - d["p50_ms"], m["p99_ms"] - d["p99_ms"]) if d and key != "direct" else (None, None)
            lines.append(f"| {label} | {c} | {m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {fmt(added[0])} | "
                         f"{fmt(added[1])} | {fmt(m['gateway_cpu_ms'])} | {fmt(m['stack_cpu_ms'])} | "
                         f"{fmt(m['simulator_cpu_ms'])} | {fmt(m['wrk_cpu_ms'])} | {fmt(m['other_cpu_ms'])} | "
                         f"{m['machine_cpu_pct']:.0f}% | {pct(m['busiest_worker_pct'])} | {m['errors']} |")
    top = max(r["upstream"], key=int)
    st, h = r["stream_ttfb"], r["held_streams"]
    lines += ["", f"## Logging on vs off (c={top} each)", "",
              "Two gateways, one with GATEWAY_LOG_REQUESTS=false, loaded at the same moment by a wrk each, round after "
              "round (bench/ab.py): the figure is the median of the rounds' on/off ratios, so that the machine's "
              "drift, which hits both alike, cancels; half the rounds with a pair started one way round, half with "
              "a fresh pair started the other way, since the first started reads a little slower. First against the instant simulator, which saturates both "
              f"cores, then against one answering in {PACED_MS} ms. The control runs two gateways with logging off "
              "the same way: how far apart two identical gateways read.", ""]
    for key, what in (("logging", "instant upstream (saturated)"), ("logging_control", "control: off vs off"),
                      ("logging_paced", f"upstream in {PACED_MS} ms")):
        lines += _ab_table(r[key], what)
    lines += ["Each round (first side / second side; wrk's connections per worker, halfway through the round):", ""]
    for key in ("logging", "logging_control", "logging_paced"):
        xs, ys = [v["runs"] for n, v in r[key].items() if n != "paired"]
        lines.append(f"- {key}: " + "; ".join(
            f"p50 {a['p50_ms']:.1f}/{b['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f}/{b['p99_ms']:.1f} ms "
            f"({'/'.join(map(str, a['connections_per_worker'])) or '?'} and "
            f"{'/'.join(map(str, b['connections_per_worker'])) or '?'})" for a, b in zip(xs, ys)))
    lines += ["", f"{r['rows_logged']} request rows were in PostgreSQL when the logging-on gateway stopped.", "",
              "## Streams", "",
              f"Timed once the request log had caught up: {r['writer_drain']['rows']} rows were in PostgreSQL, the "
              f"last written {r['writer_drain']['seconds']:.1f} s after the cache-hit runs stopped (the writer's lag "
              "behind the peak request rate).", "",
              "| | direct | gateway | added |", "|---|---:|---:|---:|",
              f"| time to first event, median of {r['ttfb_streams']} | "
              f"{st['direct_ttfb_ms']:.2f} ms | {st['gateway_ttfb_ms']:.2f} ms | {st['added_ttfb_ms']:.2f} ms |",
              f"| whole stream, median | {st['direct_total_ms']:.2f} ms | {st['gateway_total_ms']:.2f} ms | "
              f"{st['added_total_ms']:.2f} ms |",
              f"| time to first event on a reused connection, median | {st['reused_direct_ttfb_ms']:.2f} ms | "
              f"{st['reused_gateway_ttfb_ms']:.2f} ms | {st['reused_added_ttfb_ms']:.2f} ms |", "",
              "Each stream above but the last row opens a connection of its own (the target's figure); the last row "
              "sends its streams on one kept-alive connection each way, as an SDK's connection pool does.", "",
              f"Held at once: {h['streams']} streams (20 tokens at 2 tokens/s, opened at {r['streams_per_second']}/s): "
              f"{h['ok']} ended with [DONE], {h['failed']} failed {h['errors'] or ''}; at most {h['peak_open']} open at "
              f"the same moment; first event p50 {h['first_event_p50_ms']} ms, slowest {h['first_event_max_ms']} ms; "
              f"gateway CPU {h['gateway_cpu_ms_per_stream']:.2f} ms per stream. Gateway RSS at its peak: "
              f"{h['rss_peak']['total_mb']} MB for both workers ({h['rss_peak']['per_worker_mb']}, "
              f"{h['rss_peak']['open']} streams open).", "",
              "## Memory (RSS per worker, MB)", "",
              f"- idle, after start: {r['rss_idle_mb']}",
              f"- after the non-streaming runs: {r['rss_after_requests_mb']}",
              f"- after load (all of the above, streams closed 2 s before): {r['rss_after_load_mb']}",
              f"- 12 s after load (quiet workers trim their heap): {r['rss_settled_mb']}"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _ab_table(ab, what):
    (x, a), (y, b) = [(n, v) for n, v in ab.items() if n != "paired"]
    p = ab["paired"]
    pg = [run["postgres_cpu_ms_total"] / max(1, run["requests"]) for run in a["runs"]]
    return [f"| {what} | req/s | p50 ms | p99 ms | gateway CPU ms/req |", "|---|---:|---:|---:|---:|",
            f"| {x} ({len(a['runs'])} rounds, medians) | {a['rps']:.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | "
            f"{fmt(a['gateway_cpu_ms'])} |",
            f"| {y} | {b['rps']:.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} | {fmt(b['gateway_cpu_ms'])} |",
            f"| {x} vs {y}, median of the rounds' ratios | {p['rps']:+.2f}% | {p['p50_ms']:+.2f}% | "
            f"{p['p99_ms']:+.2f}% | {p['gateway_cpu_ms']:+.2f}% |", "",
            f"PostgreSQL's CPU in those rounds: {statistics.median(pg):.3f} ms per request of {x}.", ""]


def yardstick(r):
    """The echo's figures at the top concurrency, and the gateway's CPU per request against the echo's, in words."""
    top = str(max(int(c) for c in r["echo"]))
    echo = r["echo"][top]
    cpu = echo["gateway_cpu_ms"]
    return (f"at c={top} {echo['rps']:.0f} req/s, {cpu:.2f} ms of CPU a request; the gateway's CPU per request is "
            f"{r['upstream'][top]['gateway_cpu_ms'] / cpu:.1f}x the echo's for an upstream call and "
            f"{r['cache'][top]['gateway_cpu_ms'] / cpu:.1f}x for a cache hit")


def summary_table(r):
    rows = [f"{'figure':<66} {'value':>10} {'target':>12}  met"]
    for x in verdicts(r):
        val = f"{x['value']:.0f}" if x["unit"] in ("req/s", "") else f"{x['value']:.2f}"
        rows.append(f"{x['what']:<66} {val + ' ' + x['unit']:>10} {x['op'] + ' ' + str(x['target']) + ' ' + x['unit']:>12}"
                    f"  {'yes' if x['met'] else 'NO'}")
    return "\n".join(rows)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=6, help="seconds per run")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each figure's runs")
    p.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16, 64])
    p.add_argument("--tokens", type=int, default=12, help="words in the simulator's reply")
    p.add_argument("--ttfb-streams", type=int, default=50)
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--streams-per-second", type=int, default=400)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (`make system-deps` installs it as root)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # children inherit it: 2,000 streams each way
    if want < 2 * args.streams + 200:
        sys.exit(f"bench: the open-file limit ({want}) is too low for {args.streams} streams")

    bench = Bench(args)
    # SIGTERM as Ctrl-C: the finally below runs either way.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        bench.run()
    finally:
        bench.close()
    r = bench.results
    r["ttfb_streams"], r["streams_per_second"] = args.ttfb_streams, args.streams_per_second
    r["seconds_total"] = round(time.monotonic() - started)
    r["machine"]["speed_probe_ms_after"] = speed_probe()
    busy = [f"{label} c={c} ({m['other_cpu_ms']:.2f} ms/req)" for label in ("upstream", "cache")
            for c, m in r[label].items() if m["other_cpu_ms"] > 0.2]
    if busy:
        bench.notes.append("Other processes used the CPU during: " + ", ".join(busy) + ". Those figures are "
                           "pessimistic; run again on a quiet machine to compare.")
    r["targets"] = verdicts(r)
    r["notes"] = bench.notes
    with open(os.path.join(bench.out, "report.json"), "w") as f:
        json.dump(r, f, indent=2, default=str)
    with open(os.path.join(bench.out, "report.md"), "w") as f:
        f.write(markdown(r, bench.notes))
    print()
    print(summary_table(r))
    print(f"\nyardstick, a bare Flask + gevent echo: {yardstick(r)}")
    m = r["machine"]
    print(f"\nmachine speed probe: {m['speed_probe_ms_before']} ms before, {m['speed_probe_ms_after']} ms after "
          "(a fixed pure-Python loop; lower is faster)")
    print(f"\nwhole bench: {r['seconds_total']} s; report: {os.path.relpath(bench.out, os.getcwd())}/report.md "
          "and report.json")


if __name__ == "__main__":
    main()
