"""A greenlet with more to do lets the worker's other clients run first: it waits for the event loop's next poll.

`gevent.sleep(0)` does not do that. gevent runs the callbacks it queues before it next polls for I/O, so a
client waiting on its socket was still served last (the loop's iteration count does not move across it). A
timer comes due only after the next poll, together with the other clients' sockets. Outside gevent (a log
writer on a thread of its own) the same call is a sleep of a few microseconds.
"""
import time

TURN = 1e-6  # seconds


def take_turn():
    """Under gevent's patching, `time.sleep` is gevent's: a timer due at the loop's next poll."""
    time.sleep(TURN)
