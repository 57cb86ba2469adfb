"""A quiet worker gives freed heap memory back once it has grown; a busy one is left alone."""
import os
import sys

import pytest
import responses

from gateway import memory
from gateway.providers import fetch, pools

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}

MB = 1 << 20


class FakeHeap:
    def __init__(self, rss):
        self.rss, self.free, self.trims = rss, 0, 0

    def trim(self, pad):
        assert pad == 0
        self.trims += 1
        self.rss -= 20 * MB


def trimmer(heap):
    return memory.Trimmer(growth_bytes=16 * MB, trim=heap.trim, rss=lambda: heap.rss, free=lambda: heap.free)


def test_a_busy_worker_is_not_trimmed():
    heap = FakeHeap(140 * MB)
    assert trimmer(heap).tick(quiet=False) is None
    assert heap.trims == 0


def test_a_quiet_worker_is_trimmed_and_says_how_much():
    heap = FakeHeap(140 * MB)
    assert trimmer(heap).tick(quiet=True) == 20 * MB
    assert heap.trims == 1


def test_it_trims_again_only_after_growing_past_the_threshold():
    heap = FakeHeap(140 * MB)
    t = trimmer(heap)
    t.tick(quiet=True)            # 120 MB after
    heap.rss += 10 * MB           # 130: not enough growth
    assert t.tick(quiet=True) is None
    heap.rss += 10 * MB           # 140: 20 MB above the last trim
    assert t.tick(quiet=True) == 20 * MB
    assert heap.trims == 2


def test_it_trims_again_once_the_heap_holds_that_much_more_free_memory():
    heap = FakeHeap(140 * MB)
    t = trimmer(heap)
    t.tick(quiet=True)            # 120 MB after
    heap.free += 10 * MB          # say, idle connections closed: RSS unchanged until a trim
    assert t.tick(quiet=True) is None
    heap.free += 10 * MB          # 20 MB more free than after the last trim
    assert t.tick(quiet=True) == 20 * MB
    assert heap.trims == 2


def test_after_many_idle_connections_are_closed_the_next_quiet_check_trims_whatever_the_growth():
    heap = FakeHeap(140 * MB)
    t = trimmer(heap)
    t.tick(quiet=True)                          # 120 MB after
    heap.free += 1 * MB                         # a few KB per connection closed: far below the threshold
    assert t.tick(quiet=True, released=10) is None      # a few: not worth a trim
    assert t.tick(quiet=False, released=60) is None     # 70 in all, but busy: remembered, not done
    assert t.tick(quiet=True) == 20 * MB        # the first quiet check trims
    assert t.tick(quiet=True) is None           # and only once
    assert heap.trims == 2


def test_a_trim_empties_the_method_cache_first(monkeypatch):
    cleared = []
    monkeypatch.setattr(sys, "_clear_type_cache", lambda: cleared.append(True))
    heap = FakeHeap(140 * MB)
    trimmer(heap).tick(quiet=True)
    assert cleared == [True] and heap.trims == 1


def test_malloc_reports_the_free_memory_a_trim_can_give_back():
    free = memory._malloc_free_bytes()
    assert free is not None                       # glibc 2.33+, as on this machine and in CI
    blocks = [bytearray(3000) for _ in range(5000)]
    # Read after the blocks are made: they may fill holes that earlier tests left in this process's heap, which
    # would count against the holes made here (with ~9 MB of such holes, the difference read -1.6 MB).
    before = free()
    del blocks[::2]
    assert free() - before > 5000 * 3000 // 4    # the holes are counted as free
    del blocks


def test_without_malloc_trim_it_does_nothing(monkeypatch):
    def no_libc(name):
        raise OSError("not glibc")
    monkeypatch.setattr(memory.ctypes, "CDLL", no_libc)
    assert memory._malloc_trim() is None
    assert memory.Trimmer().tick(quiet=True) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
def test_the_real_trim_gives_freed_heap_pages_back():
    assert memory._malloc_trim() is not None
    blocks = [bytearray(3000 + i % 5000) for i in range(30000)]   # below the mmap threshold: on the heap
    del blocks[::2]                                                # holes the heap keeps
    before = memory.rss_bytes()
    freed = memory.Trimmer().tick(quiet=True)
    assert freed is not None and freed > 4 * MB
    assert memory.rss_bytes() < before
    del blocks


def test_after_the_app_is_loaded_a_full_collection_no_longer_walks_what_it_loaded(tmp_path):
    """In a process of its own, as a worker: frozen objects stay frozen for the process's life."""
    import subprocess
    code = ("import gc, sys, weakref, wsgi\n"
            "from gateway import memory\n"
            "class Node: pass\n"
            "garbage = Node(); garbage.me = garbage; alive = weakref.ref(garbage); del garbage\n"  # a cycle of the start
            "loaded = len(gc.get_objects())\n"
            "memory.freeze_loaded()\n"
            "print(loaded, len(gc.get_objects()), gc.get_freeze_count(), alive() is None)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/gw.db", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    loaded, tracked, frozen, collected = out.stdout.split()
    assert int(loaded) > 20000, out.stderr[-2000:]
    assert int(frozen) > 0.9 * int(loaded) and int(tracked) < 0.05 * int(loaded)
    assert collected == "True"                     # the start's garbage was collected, not frozen


# --- the gateway counts what is in flight, so a worker holding streams is never "quiet" ---

@responses.activate
def test_an_open_stream_is_in_flight_until_its_last_byte(make_app):
    from tests.providers.wire import OPENAI_URL, openai_completion, openai_stream
    app, key = make_app(ANTHROPIC_API_KEY=None, GEMINI_API_KEY=None)
    gw = app.extensions["gateway"]
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    responses.post(OPENAI_URL, json=openai_completion())
    for body, status in ((BODY, 200), ({"model": "no-such-model", "messages": []}, 400)):
        resp = client.post("/v1/chat/completions", json=body)
        assert resp.status_code == status and gw.activity.reading()[1] == 1  # until the server closes it
        resp.close()
    assert gw.activity.reading() == (2, 0)
    for probe in ("/healthz", "/metrics"):
        client.get(probe).close()
    assert gw.activity.reading() == (2, 0)  # probes and scrapes do not keep a worker busy

    responses.replace(responses.POST, OPENAI_URL, body=openai_stream(["Hel", "lo"]),
                      content_type="text/event-stream", stream=True)
    resp = client.post("/v1/chat/completions", json={**BODY, "stream": True}, buffered=False)
    chunks = iter(resp.response)
    next(chunks)
    assert gw.activity.reading() == (3, 1)   # headers sent, the stream still open
    for _ in chunks:
        pass
    resp.close()
    assert gw.activity.reading() == (3, 0)


# --- the worker's periodic check: idle upstream connections closed, then a quiet heap trimmed ---

def test_the_check_closes_idle_upstream_connections_busy_or_not(make_app, monkeypatch):
    app, _ = make_app(GATEWAY_UPSTREAM_IDLE_SECONDS="7")
    gw = app.extensions["gateway"]
    closed = []
    images = object()                               # the image-download session, once one was made
    monkeypatch.setattr(fetch, "sessions_made", lambda: [images])
    counts = iter([0] * len(gw.sessions) + [0] + [0] * len(gw.sessions) + [3])

    def close_idle(session, max_idle):
        closed.append((session, max_idle))
        return next(counts)
    monkeypatch.setattr(pools, "close_idle", close_idle)
    ticks = []

    class Trimmer:
        def tick(self, quiet, released=0):
            ticks.append((quiet, released))

    seen = gw.memory_check(Trimmer(), gw.activity.started)
    every = [(s, 7.0) for s in [*gw.sessions.values(), images]]
    assert closed == every and ticks == [(True, 0)]
    gw.activity.started += 1                        # a request started since: not quiet, still closed
    assert gw.memory_check(Trimmer(), seen) == seen + 1
    assert closed == every * 2 and ticks == [(True, 0), (False, 3)]   # 3 closed: the trimmer is told
