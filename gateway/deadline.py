"""A block of waits bounded as a whole, under gevent.

Socket timeouts bound each wait for a byte, never a whole exchange: a peer that answers a byte at a time, or
never finishes, holds the caller for as long as it likes. Under gevent one timer can interrupt whatever wait
the block is in. Callers decide whether their waits can be interrupted (a blocking driver's cannot) and what
a timeout means to them.
"""
import contextlib
import time

from greenlet import getcurrent


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


class _Overdue(BaseException):
    """Thrown by Watchdog into a greenlet whose bounded block ran past its time. A BaseException, as gevent's
    Timeout is, so that no `except Exception` inside the block takes it for an error of its own."""

    def __init__(self, block):
        super().__init__()
        self.block = block


class Watchdog:
    """`bounded` for blocks on the request path that almost never wait: a gevent timer a block costs ~3-6 µs to
    arm and cancel, this a dict entry (~1 µs with the block's object). One greenlet a process looks at the blocks
    under way once a `period` while there are any, and interrupts those past their time: a block may overrun by
    up to a period."""

    def __init__(self, period=1.0):
        self.period = period
        self._blocks = {}      # greenlet -> its _Block under way
        self._watching = False
        self._active = None

    @property
    def active(self):
        """Whether blocks can be bounded here: under gevent, patched before the first block (as gunicorn's
        workers are before they load the app). Looked up once."""
        if self._active is None:
            self._active = gevent_patched("socket")
        return self._active

    def bounded(self, seconds, expired):
        """A context manager: run the block; if it takes more than `seconds` (give or take a period), raise
        `expired()` in its place."""
        return _Block(self, seconds, expired)

    def bounded_if_active(self, seconds, expired):
        """`bounded` where blocks can be bounded (see `active`), else the block as it is."""
        return _Block(self, seconds, expired) if self.active else contextlib.nullcontext()

    def _watch(self):
        import gevent
        loop = gevent.get_hub().loop
        try:
            while self._blocks:
                gevent.sleep(self.period)
                now = time.monotonic()
                for greenlet, block in list(self._blocks.items()):
                    if now >= block.deadline:
                        loop.run_callback(self._interrupt, greenlet, block)
        finally:
            self._watching = False

    def _interrupt(self, greenlet, block):
        # Run by the hub, as gevent's own kill is. The block may have ended since the look (its read completing
        # in the same loop round): only a greenlet still inside that very block is interrupted.
        if self._blocks.get(greenlet) is block:
            greenlet.throw(_Overdue(block))


class _Block:
    __slots__ = ("dog", "deadline", "expired", "greenlet")

    def __init__(self, dog, seconds, expired):
        self.dog, self.deadline, self.expired = dog, time.monotonic() + seconds, expired

    def __enter__(self):
        dog = self.dog
        self.greenlet = getcurrent()
        dog._blocks[self.greenlet] = self
        if not dog._watching:
            import gevent
            dog._watching = True
            gevent.spawn(dog._watch)

    def __exit__(self, kind, exc, tb):
        self.dog._blocks.pop(self.greenlet, None)
        if kind is _Overdue and exc.block is self:
            raise self.expired() from None
        return False


# The one Watchdog of a process for reads of a client's request body (gateway/handlers/chat.py, accounting.py).
BODY_READS = Watchdog()
