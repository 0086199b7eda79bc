"""Process and port helpers of the tests and the benchmarks, in one place.

/proc readings (CPU time, resident and proportional memory, descendants, liveness) and
loopback ports (a free block, readiness). No third-party imports, so the test harness
(``tests/cluster.py``) and every benchmark import it without pulling in each other's
machinery. A single free port comes from the runtime's own picker,
:func:`master.embedded_redis.free_port`.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterable

from sio_cluster.master.embedded_redis import free_port, listening_range

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time of ``pids`` so far (processes gone count as 0)."""
    return sum(cpu_times(pids))


def cpu_times(pids: Iterable[int]) -> tuple[float, float]:
    """User and system (kernel) CPU time of ``pids`` so far, apart."""
    user = system = 0.0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            user += int(fields[11]) / CLK
            system += int(fields[12]) / CLK
        except OSError:
            pass
    return user, system


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of ``pids`` now."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


def pss_bytes(pids: Iterable[int]) -> int:
    """Proportional set size of ``pids`` now: each page shared by k processes counts 1/k.

    Why beside :func:`rss_bytes`: forked or spawned server processes share the interpreter's
    and the libraries' pages, which RSS counts once per process; the sum of PSS over every
    process of a system is what the system takes from the host.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def descendants(pid: int) -> set[int]:
    """Every living descendant of ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def is_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def exited(pid: int) -> bool:
    """True once every thread of ``pid`` has exited (a zombie, or gone), so the kernel has
    closed its sockets. :func:`is_running` is not enough after a SIGKILL: the thread group
    leader shows ``Z`` while its other threads are still exiting and holding the files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return False
        except (OSError, IndexError):
            pass
    return True


def free_port_block(count: int) -> int:
    """A base port P such that P..P+count-1 were all free a moment ago."""
    _, end = listening_range()
    for _ in range(200):
        base = free_port()
        if base + count > end:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def wait_port(port: int, timeout: float = 30) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def raise_open_files(needed: int) -> dict[str, int]:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"{needed} open files needed per process, the hard limit is {hard}: raise it "
            "(ulimit -Hn) or spread the clients over more --crowds"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return {"soft_before": soft, "soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
