"""gateway/deadline.py's Watchdog: a whole block bounded for the price of a dict entry, under gevent."""
import time

import gevent
import pytest

from gateway.deadline import Watchdog


class Late(Exception):
    pass


def test_a_block_past_its_time_is_interrupted_within_a_period():
    dog = Watchdog(period=0.05)
    started = time.monotonic()
    with pytest.raises(Late):
        with dog.bounded(0.2, Late):
            gevent.sleep(5)  # a wait, as a read from a trickling client is
    assert 0.2 <= time.monotonic() - started < 1.0
    assert dog._blocks == {}


def test_a_block_in_time_is_left_alone_and_the_watcher_stops_when_none_are_left():
    dog = Watchdog(period=0.05)
    with dog.bounded(1.0, Late):
        gevent.sleep(0.1)
    gevent.sleep(0.2)
    assert dog._blocks == {} and not dog._watching


def test_only_the_overdue_greenlet_is_interrupted():
    dog = Watchdog(period=0.05)

    def block(seconds, bound):
        try:
            with dog.bounded(bound, Late):
                gevent.sleep(seconds)
        except Late:
            return "late"
        return "done"
    slow, quick = gevent.spawn(block, 5, 0.2), gevent.spawn(block, 0.3, 2.0)
    gevent.joinall([slow, quick], timeout=3)
    assert (slow.value, quick.value) == ("late", "done")


def test_an_interrupt_that_arrives_after_its_block_ended_is_dropped():
    dog = Watchdog(period=10)
    with dog.bounded(1.0, Late):
        (marker,) = dog._blocks.values()
    dog._interrupt(gevent.getcurrent(), marker)  # the look saw it overdue; the read completed meanwhile
    with dog.bounded(1.0, Late):
        dog._interrupt(gevent.getcurrent(), marker)  # a later block of the same greenlet: not that one
        gevent.sleep(0)
        still_inside = True
    assert still_inside and dog._blocks == {}


def test_an_except_exception_inside_the_block_does_not_swallow_the_interrupt():
    dog = Watchdog(period=0.05)
    started = time.monotonic()
    with pytest.raises(Late):
        with dog.bounded(0.1, Late):
            try:
                gevent.sleep(5)
            except Exception:  # noqa: BLE001 - what code inside a block may well do
                pass
            gevent.sleep(5)
    assert time.monotonic() - started < 1.0
