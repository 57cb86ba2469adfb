"""A block of waits bounded as a whole, under gevent.

Socket timeouts bound each wait for a byte, never a whole exchange: a peer that answers a byte at a time, or
never finishes, holds the caller for as long as it likes. Under gevent one timer can interrupt whatever wait
the block is in. Callers decide whether their waits can be interrupted (a blocking driver's cannot) and what
a timeout means to them.
"""
import contextlib


def gevent_patched(module):
    """Whether gevent has patched `module` ("socket", "threading") in this process, as in gunicorn's gevent
    workers: there waits yield to the other greenlets, and a timer can interrupt them."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched(module)


@contextlib.contextmanager
def bounded(seconds, expired):
    """Run the block; if it takes more than `seconds`, raise `expired()` in its place."""
    import gevent
    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as t:
        if t is not timer:
            raise
        raise expired() from None
    finally:
        timer.cancel()
