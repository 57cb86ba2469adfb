"""What the bench reads of /proc: CPU ticks of processes and of the machine, process trees, RSS, connections."""
import os
import sys
import time

sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.integration.procnet import connections  # noqa: E402  the tests' reader: one for the bench and the tests

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()  # after "(comm) ": field 3 (state) is fields[0]
    return int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime + stime (ticks)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree(root):
    """root and every descendant."""
    parents = {}
    for pid in _pids():
        try:
            parents[pid] = _stat(pid)[0]
        except (OSError, ValueError, IndexError):
            pass
    found, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found.update(kids)
        frontier.extend(kids)
    return found


def by_name(*names):
    return {pid for pid in _pids() if _comm(pid) in names}


def cpu_ticks(pids):
    out = {}
    for pid in pids:
        try:
            out[pid] = _stat(pid)[1]
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_delta_ms(before, after):
    # A process absent before was born during the run: all its CPU counts. One gone after is lost (rare).
    return sum(t - before.get(pid, 0) for pid, t in after.items()) * 1000.0 / TICK


def speed_probe():
    """Milliseconds a fixed pure-Python loop takes (best of 5): how fast this machine is right now. Shared
    machines drift (the same code measured 18 and 35 ms here within an hour), and every CPU figure moves with
    it; compare runs only at similar probe times."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        sum(range(1_000_000))
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def held_per_worker(pids, port, states=("01",)):
    """The client connections to `port` each of these processes holds in these TCP states (01: ESTABLISHED),
    fewest first."""
    return sorted(connections(pids, local_port=port, states=states).values())


def machine_ticks():
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals[:8]) - idle, sum(vals[:8])


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None
