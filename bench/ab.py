"""A/B of two gateways loaded at the same moment: each round, one wrk each, started together.

Measured by turns (one gateway, then the other), the comparison drowned in the machine's drift: one gateway,
loaded ten times in a row for 5 s, read 1.15 to 1.92 ms of CPU a request (p50 39 to 69 ms), and three benches by
turns of the same log writer read logging's cost in p50 as -2.8%, +5.1% and +28.4%. Loaded together, both gateways
meet the same drift, and each round's ratio of the one to the other cancels it; the figure is the median of those
ratios. Each gateway has `concurrency` requests in flight of its own, so each gets about half the cores.
PostgreSQL's work for the rows of the one that logs slows both alike, so its CPU is reported beside the figures,
per logged request.

Being first is not neutral: in five of six A/A runs (two identical gateways) the gateway started, and loaded,
first read 1-5% more CPU a request than the second (in the sixth, 1% less), pinned to cores or not, with the same
hash seed and memory layout or not. So the caller runs half the rounds with one pair of gateways and half with a
fresh pair started the other way round (run.py's logging_ab).
"""
import statistics
import threading
import time

from procstat import by_name, cpu_delta_ms, cpu_ticks, held_per_worker, machine_ticks, tree


def together(bench, gateways, concurrency, key, body, rounds, tag=""):
    """`gateways`: {name: (gunicorn process, base url)}, two of them, loaded `rounds` times together (after a
    warm-up). Returns {name: [each round's figures]}."""
    names = list(gateways)
    for proc, url in gateways.values():
        bench.gunicorn = proc
        bench.settle(url + "/v1/chat/completions")
    _round(bench, gateways, concurrency, key, body, bench.args.warmup, tag=tag + "w")  # warm-up, not kept
    runs = {name: [] for name in names}
    for i in range(rounds):
        for proc, url in gateways.values():
            bench.gunicorn = proc
            bench.settle(url + "/v1/chat/completions")
        figures = _round(bench, gateways, concurrency, key, body, bench.args.duration, tag=f"{tag}{i}")
        for name, run in figures.items():
            runs[name].append(run)
        print(f"  round {i + 1}: " + "  ".join(
            f"{n} {r[-1]['rps']:5.0f} req/s p50 {r[-1]['p50_ms']:6.2f} ms p99 {r[-1]['p99_ms']:6.2f} ms "
            f"gw {r[-1]['gateway_cpu_ms']:.2f}" for n, r in runs.items())
            + f"  machine {runs[names[0]][-1]['machine_cpu_pct']:.0f}%", flush=True)
    return runs


def summary(runs, first, second):
    """{name: medians and "runs"} of both sides and, under "paired", the median over rounds of each figure of
    `first` against `second`, in %."""
    out = {}
    for name in (first, second):
        med = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]
               if k not in ("errors", "connections_per_worker")}
        med["errors"], med["runs"] = sum(r["errors"] for r in runs[name]), runs[name]
        out[name] = med
    out["paired"] = {k: statistics.median(100.0 * (x[k] / y[k] - 1) for x, y in zip(runs[first], runs[second]))
                     for k in ("p50_ms", "p99_ms", "rps", "gateway_cpu_ms")}
    print(f"  {first} vs {second}, median of the rounds' ratios: " +
          ", ".join(f"{k} {v:+.2f}%" for k, v in out["paired"].items()), flush=True)
    return out


def _round(bench, gateways, concurrency, key, body, seconds, tag):
    pids = {name: tree(proc.pid) for name, (proc, _) in gateways.items()}
    pg = by_name("postgres")
    before = {name: cpu_ticks(p) for name, p in pids.items()}
    pg0 = cpu_ticks(pg)
    busy0, total0 = machine_ticks()
    results, splits, threads = {}, {}, []

    def load(name, url):
        # A body of this round's own: a gateway skips validating a body it has seen (handlers/chat.py).
        results[name] = bench.wrk(url + "/v1/chat/completions", concurrency, seconds, key,
                                  body.replace("{n}", f"{tag}{name}-{{n}}"))

    def sample():
        for name, (proc, url) in gateways.items():
            port = int(url.rsplit(":", 1)[1])
            splits[name] = held_per_worker(sorted(pids[name] - {proc.pid}), port)

    for name, (_, url) in gateways.items():
        threads.append(threading.Thread(target=load, args=(name, url)))
    sampler = threading.Timer(seconds / 2, sample)
    for t in threads:
        t.start()
    sampler.start()
    for t in threads:
        t.join()
    sampler.join()
    busy1, total1 = machine_ticks()
    pg_ms = cpu_delta_ms(pg0, cpu_ticks(by_name("postgres")))
    out = {}
    for name, (proc, _) in gateways.items():
        w = results[name]
        n = max(1, w["requests"])
        out[name] = {
            **w["figures"],
            "gateway_cpu_ms": cpu_delta_ms(before[name], cpu_ticks(tree(proc.pid))) / n,
            "postgres_cpu_ms_total": pg_ms,
            "machine_cpu_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
            "connections_per_worker": splits.get(name, []),
        }
    time.sleep(0.2)
    return out
