"""The metrics tally: what it flushes equals what Prometheus would hold had each value been written at once."""
import importlib.util
import os
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import Tally

BUCKETS = (0.005, 0.01, 0.1, 1, 10)


def _pair():
    """Two registries with the same metrics: one written directly, one through a Tally."""
    out = []
    for _ in range(2):
        registry = CollectorRegistry()
        out.append((registry, Counter("reqs", "r", ["model"], registry=registry),
                    Histogram("lat", "l", ["model"], buckets=BUCKETS, registry=registry)))
    return out


def _samples(registry):
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for m in registry.collect() for s in m.samples if not s.name.endswith("_created"))


@pytest.mark.parametrize("values", [
    [0.001],
    [0.005, 0.01, 1, 10],                # on a bound: in that bucket (le is "less than or equal")
    [0.0051, 0.2, 9.99, 10.01, 500.0],   # between bounds, and past the last one (+Inf)
    [0.0, 0.3, 0.3, 0.3],
])
def test_a_flush_writes_what_direct_writes_would(values):
    (direct, d_count, d_hist), (tallied, t_count, t_hist) = _pair()
    tally = Tally()
    for v in values:
        d_count.labels("m").inc()
        d_hist.labels("m").observe(v)
        tally.add(t_count, ("m",))
        tally.observe(t_hist, ("m",), v)
    assert _samples(tallied) == [] or all(s[2] == 0 for s in _samples(tallied))  # nothing before the flush
    tally.flush()
    assert _samples(tallied) == _samples(direct)


def test_amounts_and_label_sets_add_up_across_flushes():
    (_, _, _), (registry, count, hist) = _pair()
    tally = Tally()
    tally.add(count, ("a",), 3)
    tally.add(count, ("b",), 0.25)
    tally.flush()
    tally.add(count, ("a",), 2)
    tally.observe(hist, ("b",), 0.02)
    tally.flush()
    tally.flush()  # an empty flush writes nothing twice
    assert count.labels("a")._value.get() == 5
    assert count.labels("b")._value.get() == 0.25
    assert registry.get_sample_value("lat_count", {"model": "b"}) == 1
    assert registry.get_sample_value("lat_bucket", {"model": "b", "le": "0.01"}) == 0
    assert registry.get_sample_value("lat_bucket", {"model": "b", "le": "0.1"}) == 1
    assert "lat_sum" in generate_latest(registry).decode()


def test_no_count_is_lost_to_a_flush_running_alongside():
    (_, _, _), (_, count, _) = _pair()
    tally = Tally()
    stop = threading.Event()

    def flusher():
        while not stop.is_set():
            tally.flush()

    t = threading.Thread(target=flusher)
    t.start()
    for _ in range(20000):
        tally.add(count, ("m",))
    stop.set()
    t.join()
    tally.flush()
    assert count.labels("m")._value.get() == 20000


def test_metrics_endpoint_shows_a_request_at_once(client):
    """/metrics flushes this process's tally first: a request is counted by the next scrape."""
    from gateway import metrics
    before = metrics.render(client.application.extensions["gateway"]).decode()
    client.post("/v1/chat/completions", json={"model": "gpt-99", "messages": [{"role": "user", "content": "x"}]})
    after = metrics.render(client.application.extensions["gateway"]).decode()

    def total(text):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("gateway_requests_total{") and 'status="404"' in line)
    assert total(after) == total(before) + 1


def test_a_stopping_worker_writes_what_it_counted(client, monkeypatch):
    """gunicorn's worker_exit hook flushes the tally: a worker stopped within a second of its last requests
    (a reload, a scale-down) loses no count."""
    from gateway import metrics
    monkeypatch.setenv("PORT", "0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("gunicorn_conf_exit", os.path.join(root, "gunicorn.conf.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    counted = metrics.REQUESTS.labels("exit-test", "none", "200")
    before = counted._value.get()
    metrics.TALLY.add(metrics.REQUESTS, ("exit-test", "none", "200"), 3)

    class Worker:
        wsgi = client.application
    conf.worker_exit(None, Worker())
    assert counted._value.get() == before + 3


def test_each_worker_samples_the_log_writer_every_second_not_only_when_scraped(client, tmp_path):
    """A worker that serves no scrape must not leave a stale spool or queue figure for the others."""
    from gateway import metrics
    gateway = client.application.extensions["gateway"]
    writer = gateway.log_writer
    (tmp_path / "spool-1-x.jsonl").write_bytes(b"x" * 1234)
    writer.spool_dir = str(tmp_path)
    metrics.LOG_SPOOL.set(0)
    metrics.sample_log_writer(writer)   # what the per-second metrics loop calls
    assert metrics.LOG_SPOOL._value.get() == 1234
    assert metrics.LOG_SPOOL._multiprocess_mode == "max"  # every worker sees the whole directory
