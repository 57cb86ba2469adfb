"""What a process tree holds, read from /proc (Linux): its workers, and the TCP connections they hold open."""
import os


def workers(master_pid):
    """The master's child processes."""
    children = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == master_pid:
            children.append(int(pid))
    return children


def connections(pids, local_port=None, remote_port=None, states=("01",)):
    """pid -> how many TCP connections it holds with that local and/or remote port, in these states (as
    /proc/net/tcp writes them; 01: ESTABLISHED). A process gone meanwhile holds none. (`make bench` uses it too.)"""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    held = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = (int(fields[i].rsplit(":", 1)[1], 16) for i in (1, 2))
                if (fields[3] in states and fields[9] in owner
                        and local_port in (None, local) and remote_port in (None, remote)):
                    held[owner[fields[9]]] += 1
    return held
