"""The spawn floor of a Python dispatcher, and whether a spawner helper process lowers it.

Runs ``N`` ``true`` processes, ``-j`` at a time, each started as orch starts an attempt
(``os.posix_spawn`` with its own session, stdin from /dev/null, stdout and stderr appended to
two new files), after ``--work`` microseconds of busy "bookkeeping" per finished task (orch's
per-task Python work is ~200-300 us). Two ways:

  inline  the dispatcher spawns itself, as orch does: posix_spawn holds it (and the GIL) until
          the child has exec'd, so spawning and bookkeeping add up
  helper  a helper process forked at start spawns and reaps on request over a pipe, so the
          dispatcher never waits for an exec and its bookkeeping overlaps the spawns

Prints milliseconds per task for each, alternating the two run by run, median of ``--repeat``.
Standard library only; Linux (pidfd_open). A report, not a test: it always exits 0.

    python3 bench/spawn_floor.py                      # --work 0 and 200, 2,000 tasks, -j2
    python3 bench/spawn_floor.py --tmpdir /dev/shm --work 250 --jobs 2 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


class Spawner:
    """Starts ``true`` the way orch's local runner does."""

    def __init__(self, logs: str) -> None:
        self.logs = logs
        self.env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
        self.true = shutil.which("true") or "/bin/true"

    def spawn(self, i: int) -> int:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, f"{self.logs}/{i}.out.log", _FLAGS, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, f"{self.logs}/{i}.err.log", _FLAGS, 0o600),
        ]
        return os.posix_spawn(self.true, ["true"], self.env, file_actions=actions, setsid=True)


def bookkeeping(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def inline(spawner: Spawner, n: int, jobs: int, work: float) -> None:
    poll = select.poll()
    watched: Dict[int, int] = {}
    started = done = 0
    while done < n:
        while started < n and len(watched) < jobs:
            pid = spawner.spawn(started)
            started += 1
            fd = os.pidfd_open(pid)
            watched[fd] = pid
            poll.register(fd, select.POLLIN)
        for fd, _ in poll.poll():
            pid = watched.pop(fd)
            poll.unregister(fd)
            os.close(fd)
            os.waitpid(pid, 0)
            done += 1
            bookkeeping(work)


def _helper_loop(spawner: Spawner, commands: int, results: int) -> None:
    poll = select.poll()
    poll.register(commands, select.POLLIN)
    watched: Dict[int, Tuple[int, int]] = {}
    pending = b""
    while True:
        for fd, _ in poll.poll():
            if fd == commands:
                data = os.read(commands, 4096)
                if not data:
                    return
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    i = int(line)
                    pid = spawner.spawn(i)
                    pidfd = os.pidfd_open(pid)
                    watched[pidfd] = (pid, i)
                    poll.register(pidfd, select.POLLIN)
            else:
                pid, i = watched.pop(fd)
                poll.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                os.write(results, b"%d %d\n" % (i, status))


def helper(spawner: Spawner, n: int, jobs: int, work: float) -> None:
    command_r, command_w = os.pipe()
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(command_w)
        os.close(result_r)
        try:
            _helper_loop(spawner, command_r, result_w)
        finally:
            os._exit(0)
    os.close(command_r)
    os.close(result_w)
    started = done = 0
    pending = b""
    while started < min(jobs, n):
        os.write(command_w, b"%d\n" % started)
        started += 1
    while done < n:
        *lines, pending = (pending + os.read(result_r, 4096)).split(b"\n")
        for _ in lines:
            done += 1
            if started < n:  # the next start first: it overlaps this task's bookkeeping
                os.write(command_w, b"%d\n" % started)
                started += 1
            bookkeeping(work)
    os.close(command_w)
    os.close(result_r)
    os.waitpid(child, 0)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=float, action="append", help="us of bookkeeping")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmpdir", default=None, help="where the log files go")
    args = parser.parse_args(argv)
    if not hasattr(os, "pidfd_open"):
        print("spawn_floor: needs os.pidfd_open (Linux, Python 3.9+)", file=sys.stderr)
        return 0
    print(f"{args.tasks} tasks, -j{args.jobs}, load average {os.getloadavg()[0]:.2f}")
    for work_us in args.work or [0.0, 200.0]:
        times: Dict[str, List[float]] = {"inline": [], "helper": []}
        for _ in range(args.repeat):
            for name, way in (("inline", inline), ("helper", helper)):
                logs = tempfile.mkdtemp(prefix="spawn-floor-", dir=args.tmpdir)
                began = time.perf_counter()
                way(Spawner(logs), args.tasks, args.jobs, work_us / 1e6)
                times[name].append((time.perf_counter() - began) / args.tasks * 1e3)
                shutil.rmtree(logs)
        shown = ", ".join(f"{k} {statistics.median(v):.3f} ms/task" for k, v in times.items())
        print(f"bookkeeping {work_us:.0f} us per task: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
