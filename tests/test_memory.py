"""A quiet worker gives freed heap memory back once it has grown; a busy one is left alone."""
import sys

import pytest

from gateway import memory

MB = 1 << 20


class FakeHeap:
    def __init__(self, rss):
        self.rss, self.trims = rss, 0

    def trim(self, pad):
        assert pad == 0
        self.trims += 1
        self.rss -= 20 * MB


def trimmer(heap):
    return memory.Trimmer(growth_bytes=16 * MB, trim=heap.trim, rss=lambda: heap.rss)


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


def test_without_malloc_trim_it_does_nothing():
    t = memory.Trimmer(trim=None)
    t._trim = None
    assert t.tick(quiet=True) is None


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
