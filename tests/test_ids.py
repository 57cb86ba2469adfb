"""Request-path ids: random, never handed out twice, never shared by forked workers."""
import os
import re
import threading

from gateway import ids


def test_ids_have_the_asked_length_and_alphabet():
    assert re.fullmatch(r"[0-9a-f]{24}", ids.token_hex(12))
    assert re.fullmatch(r"[A-Za-z0-9_-]{28}", ids.token_urlsafe(21))
    assert len(ids.token_bytes(5000)) == 5000  # more than a batch at once


def test_bytes_are_handed_out_once_across_batches():
    seen = {ids.token_hex(12) for _ in range(3 * ids._BATCH // 12)}
    assert len(seen) == 3 * ids._BATCH // 12


def test_threads_never_get_the_same_bytes():
    out = []

    def draw():
        out.extend(ids.token_hex(8) for _ in range(2000))
    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == len(out) == 8000


def test_a_forked_child_does_not_repeat_its_parents_next_ids():
    ids.token_hex(12)  # the parent holds a batch with bytes still to hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, ids.token_hex(12).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert child != ids.token_hex(12)


def test_request_ids_start_with_the_time_and_sort_in_the_order_they_were_made():
    import time
    before = time.time_ns() // 1_000_000
    first = ids.request_id()
    time.sleep(0.002)
    later = [ids.request_id() for _ in range(100)]
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"req_[0-9a-f]{28}", i) for i in [first, *later])
    assert before <= int(first[4:16], 16) <= after
    assert all(first < i for i in later)  # a millisecond or more apart: in order
    assert len({i[16:] for i in later}) == 100  # within one: told apart by their random part
