#!/usr/bin/env python3
"""Engine benchmark: orch against GNU make -j (and a minimal Python runner) on the same DAGs.

One command reproduces the whole "Make-class speed" table::

    python3 bench/bench_engine.py [--repeat 5] [--only NAME,...] [--quick] [--json FILE]

Every workload runs each tool as its own process, the tools alternating run by run, and reports
the median of ``--repeat`` runs (5) with the ratio against make measured in the same run. Every
task is ``true`` (``sleep`` only for the idle-timeout workload). A report, not a test: it exits 0
once it has run, whatever the numbers (2 on bad arguments); bench/README.md says what each row
measures and how to read it.

  make     ``make -s -jN -f Makefile all`` on a generated Makefile of phony targets
  py-dag   this file re-invoked as ``--_baseline GRAPH N``: a ThreadPoolExecutor of N threads
           calling ``subprocess.run(["true"])``, releasing dependents as tasks finish
  orch     ``python3 -m orch run plan.yaml --home TMP --max-parallel N``

Each run goes through a small measuring parent (``python3 -I -S``) that times the child, reads
the child's own CPU time (/proc/PID/stat of the exited, not yet reaped child: orch alone, not the
tasks it ran) and its peak RSS (``wait4``), so that the benchmark's own size never leaks into
the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT_SEC = 1800.0
DEFAULT_REPEAT = 5
QUICK_REPEAT = 3
MIN_CHEAP_REPEAT = 5  # startup and status calls are cheap: never fewer runs than this
JOBS = 2  # -j / --max-parallel of every workload that names no other
POOLS = {"p1": 1, "p2": 2, "p3": 3, "p4": 4}
# Task i goes to pool POOL_OF[i % 10]: each pool gets a share of the tasks matching its slots,
# so that no pool is the bottleneck and the comparison measures the pool bookkeeping.
POOL_OF = ["p1", "p2", "p2", "p3", "p3", "p3", "p4", "p4", "p4", "p4"]
IDLE_TIMEOUT_SEC = 30
IDLE_JOBS = 100
PROBE_FILES = 200  # files created to time one file creation, before and after each workload
CAVEAT = (
    "orch creates files for every task (two logs; a context file per distinct set of "
    "dependencies; journal lines, fsynced before a dependent starts); make creates none. "
    "On ext4 without a journal, after many deletions a file creation costs ~0.4 ms instead of "
    "~0.03 ms for minutes: benchmark in a quiet window (no big `rm -rf`, test suite or other "
    "benchmark just before or alongside), compare ratios from one run, and check the load "
    "averages and the cost of a file creation (last column)."
)

# deps[i] lists the indexes task i depends on; tasks are named t0..t{n-1} in that order.
Graph = List[List[int]]
Run = Dict[str, Any]


# ---------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    flat: int  # independent tasks, -j2 and -j8
    chain: int
    layers: int
    width: int
    big: int  # the large independent run (RSS, per-task cost, status)
    small: int  # the small point of the per-task cost
    pools: int
    idle_tasks: int
    idle_sleep: int


FULL = Sizes(
    flat=1000, chain=1000, layers=50, width=20, big=10000, small=100, pools=1000,
    idle_tasks=100, idle_sleep=5,
)  # fmt: skip
QUICK = Sizes(
    flat=200, chain=200, layers=10, width=20, big=2000, small=50, pools=200,
    idle_tasks=100, idle_sleep=2,
)  # fmt: skip

# Selectable with --only, in the order they run. "fixed" (a 1-task plan: each tool's start-up)
# and "flat-small" feed the per-task cost and run when it is selected.
WORKLOADS = [
    "startup",
    "fixed",
    "flat-small",
    "flat",
    "chain",
    "layered",
    "flat-j8",
    "pools",
    "idle-timeout",
    "flat-big",
    "per-task",
    "rss",
    "status",
]
NEEDS = {
    "per-task": ["fixed", "flat-small", "flat", "flat-big"],
    "rss": ["flat-big"],
}


# ---------------------------------------------------------------------------- graphs


def independent(n: int) -> Graph:
    return [[] for _ in range(n)]


def chain(n: int) -> Graph:
    return [[i - 1] if i else [] for i in range(n)]


def layered(layers: int, width: int) -> Graph:
    """``layers`` layers of ``width`` tasks; each task depends on every task of the layer before."""
    deps: Graph = []
    for layer in range(layers):
        previous = list(range((layer - 1) * width, layer * width)) if layer else []
        deps.extend(list(previous) for _ in range(width))
    return deps


def write_plan(
    path: str,
    deps: Graph,
    cmd: Sequence[str] = ("true",),
    top: Sequence[str] = (),
    task_extra: Optional[Callable[[int], str]] = None,
) -> None:
    """A plan of tasks t0..t{n-1}; ``top`` adds top-level lines, ``task_extra`` task keys."""
    argv = "[" + ", ".join(json.dumps(a) for a in cmd) + "]"
    lines = ["goal: orch engine benchmark", *top, "tasks:"]
    for i, parents in enumerate(deps):
        line = f"  - {{id: t{i}, cmd: {argv}"
        if parents:
            line += ", depends_on: [" + ", ".join(f"t{p}" for p in parents) + "]"
        if task_extra is not None:
            line += task_extra(i)
        lines.append(line + "}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_makefile(path: str, deps: Graph, recipe: str = "true") -> None:
    """Phony targets, one per task, with the same prerequisite edges as the plan."""
    names = [f"t{i}" for i in range(len(deps))]
    has_dependent = set(p for parents in deps for p in parents)
    sinks = [names[i] for i in range(len(deps)) if i not in has_dependent]
    out = [".PHONY: all " + " ".join(names), "all: " + " ".join(sinks)]
    for i, parents in enumerate(deps):
        out.append(f"{names[i]}: " + " ".join(names[p] for p in parents))
        out.append("\t" + recipe)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def edges(deps: Graph) -> int:
    return sum(len(parents) for parents in deps)


# ---------------------------------------------------------------------------- python baseline


def baseline_main(graph_path: str, jobs: int) -> int:
    """The minimal Python runner: dependency-aware, no state, no logs."""
    with open(graph_path, encoding="utf-8") as f:
        deps: Graph = json.load(f)
    dependents: Graph = [[] for _ in deps]
    waiting = [len(parents) for parents in deps]
    for i, parents in enumerate(deps):
        for p in parents:
            dependents[p].append(i)
    done: queue.Queue[Tuple[int, int]] = queue.Queue()

    def run(i: int) -> None:
        code = subprocess.run(["true"], check=False).returncode
        done.put((i, code))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for i in range(len(deps)):
            if not waiting[i]:
                pool.submit(run, i)
        for _ in range(len(deps)):
            i, code = done.get()
            if code != 0:
                return 1
            for child in dependents[i]:
                waiting[child] -= 1
                if not waiting[child]:
                    pool.submit(run, child)
    return 0


# ---------------------------------------------------------------------------- measuring

# The measuring parent. It is small (python -I -S, a few MiB), so the child's ru_maxrss (which
# Linux carries over fork + exec from the parent's size) is the child's own unless the child is
# smaller still (make, true): see the "RSS floor" in the output. Between the child's exit and its
# reaping, /proc/PID/stat still holds the child's own user+system time (fields 14, 15), apart
# from the time of the children it reaped (fields 16, 17).
_MEASURE = r"""
import json, os, subprocess, sys, threading, time
out_path, err_path, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
self_cpu = None
with open(out_path, "wb") as out, open(err_path, "wb") as err:
    began = time.perf_counter()
    proc = subprocess.Popen(sys.argv[4:], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    timer = threading.Timer(limit, proc.kill)
    timer.daemon = True
    timer.start()
    wall = None
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - began
        with open("/proc/%d/stat" % proc.pid, "rb") as f:
            raw = f.read()
        fields = raw[raw.rfind(b")") + 2 :].split()
        self_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (AttributeError, OSError, IndexError, ValueError):
        pass
    _, status, usage = os.wait4(proc.pid, 0)
    if wall is None:
        wall = time.perf_counter() - began
    timer.cancel()
code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"wall": wall, "rc": code, "rss_bytes": rss,
                  "cpu": usage.ru_utime + usage.ru_stime, "self_cpu": self_cpu}))
"""


@dataclass
class Variant:
    """One command of a workload; ``argv(rep)`` may differ per repeat (its own orch home)."""

    key: str
    argv: Callable[[int], List[str]]
    cwd: str


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()[-4000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _progress(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def loadavg() -> Optional[str]:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        if hasattr(os, "getloadavg"):
            return " ".join(f"{x:.2f}" for x in os.getloadavg())
        return None


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class Bench:
    def __init__(self, args: argparse.Namespace, root: str) -> None:
        self.args = args
        self.root = root
        self.sizes = QUICK if args.quick else FULL
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (args.orch_root, os.environ.get("PYTHONPATH", "")) if p
        )
        self.env.pop("ORCH_HOME", None)
        self.env["NO_COLOR"] = "1"
        if not args.no_bytecode_cache:
            # As installed, orch runs from cached bytecode; PYTHONDONTWRITEBYTECODE (set in some
            # sandboxes) would make every run recompile orch (~0.1 s). The cache goes to the
            # scratch directory, not into the checkout.
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = os.path.join(root, "pycache")
            subprocess.run(
                [args.python, "-m", "compileall", "-q", os.path.join(args.orch_root, "orch")],
                env=self.env,
                stdout=subprocess.DEVNULL,
                check=False,
            )
        self.results: Dict[str, Dict[str, Any]] = {}
        self.errors: List[str] = []
        self.notices: List[str] = []
        self.big_run: Optional[Tuple[str, str]] = None  # (home, run_id) of a finished big run
        self._serial = 0

    # ------------------------------------------------------------------ one run

    def run_one(self, argv: Sequence[str], cwd: str, label: str) -> Run:
        """Run ``argv`` through the measuring parent; never raises for a failing command."""
        self._serial += 1
        out = os.path.join(self.root, "out", f"{self._serial:05d}.out")
        # Untimed: the write-back of earlier runs must not land in this one.
        os.sync()
        wrapper = [self.args.python, "-I", "-S", "-c", _MEASURE, out, out + ".err"]
        done = subprocess.run(
            [*wrapper, str(RUN_TIMEOUT_SEC), *argv],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            run: Run = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            self.errors.append(f"{label}: the measuring parent failed: {done.stderr.strip()!r}")
            return {"wall": float("nan"), "rc": -1, "rss_bytes": 0, "cpu": 0.0, "self_cpu": None}
        run["out"] = out
        if run["rc"] != 0:
            self.errors.append(f"{label} exited {run['rc']}: {_tail(out + '.err')!r}")
        return run

    def create_cost_us(self) -> float:
        """Microseconds per file creation in the scratch directory, now (the disk caveat).

        orch creates three files per task: when this goes from tens of microseconds to hundreds
        (ext4 after mass deletions), orch's times move and make's do not.
        """
        self._serial += 1
        d = os.path.join(self.root, "probe", str(self._serial))
        os.makedirs(d)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        began = time.perf_counter()
        for i in range(PROBE_FILES):
            os.close(os.open(os.path.join(d, f"f{i}"), flags, 0o600))
        return 1e6 * (time.perf_counter() - began) / PROBE_FILES

    def measure(
        self, name: str, variants: Sequence[Variant], repeat: Optional[int] = None
    ) -> Dict[str, Any]:
        """Every variant ``repeat`` times, alternating run by run; load and disk around it."""
        repeat = repeat or self.args.repeat
        runs: Dict[str, List[Run]] = {v.key: [] for v in variants}
        load_before = loadavg()
        create_before = self.create_cost_us()
        for rep in range(repeat):
            order = list(variants)
            if len(order) > 2:  # rotate, so that no tool always runs first after the sync
                shift = rep % len(order)
                order = order[shift:] + order[:shift]
            for v in order:
                _progress(f"{name} {v.key} #{rep + 1}/{repeat}")
                runs[v.key].append(self.run_one(v.argv(rep), v.cwd, f"{name} {v.key}"))
        result = {
            "name": name,
            "runs": runs,
            "repeat": repeat,
            "load_before": load_before,
            "load_after": loadavg(),
            "create_us_before": create_before,
            "create_us_after": self.create_cost_us(),
        }
        self.results[name] = result
        return result

    # ------------------------------------------------------------------ commands

    def orch(self, *args: str) -> List[str]:
        return [self.args.python, "-m", "orch", *args]

    def dag_dir(
        self,
        name: str,
        deps: Graph,
        cmd: Sequence[str] = ("true",),
    ) -> str:
        """A directory holding plan.yaml, Makefile and graph.json for ``deps``."""
        d = os.path.join(self.root, name)
        os.makedirs(d, exist_ok=True)
        write_plan(os.path.join(d, "plan.yaml"), deps, cmd=cmd)
        write_makefile(os.path.join(d, "Makefile"), deps, recipe=" ".join(cmd))
        with open(os.path.join(d, "graph.json"), "w", encoding="utf-8") as f:
            json.dump(deps, f)
        return d

    def make_variant(self, d: str, jobs: int) -> Variant:
        argv = [self.args.make, "-s", f"-j{jobs}", "-f", "Makefile", "all"]
        return Variant("make", lambda rep: argv, d)

    def py_variant(self, d: str, jobs: int) -> Variant:
        argv = [self.args.python, os.path.abspath(__file__), "--_baseline", "graph.json", str(jobs)]
        return Variant("py-dag", lambda rep: argv, d)

    def orch_variant(
        self, d: str, jobs: int, plan: str = "plan.yaml", key: str = "orch"
    ) -> Variant:
        def argv(rep: int) -> List[str]:
            home = os.path.join(d, f"home-{key.replace(' ', '-')}-r{rep}")
            return self.orch("run", plan, "--home", home, "--max-parallel", str(jobs))

        return Variant(key, argv, d)

    def validate(self, plan: str) -> Tuple[bool, str]:
        done = subprocess.run(
            self.orch("validate", os.path.basename(plan)),
            # Never the checkout's directory: `python -m` puts the cwd first on sys.path, and
            # the orch found there would shadow --orch-root.
            cwd=os.path.dirname(plan),
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        text = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return done.returncode == 0, (text[0] if text else f"exit {done.returncode}")

    # ------------------------------------------------------------------ workloads

    def dag_workload(self, name: str, deps: Graph, jobs: int) -> Dict[str, Any]:
        d = self.dag_dir(name, deps)
        variants = [
            self.make_variant(d, jobs),
            self.py_variant(d, jobs),
            self.orch_variant(d, jobs),
        ]
        result = self.measure(name, variants)
        result.update(tasks=len(deps), edges=edges(deps), jobs=jobs)
        return result

    def w_fixed(self) -> None:
        self.dag_workload("fixed", independent(1), JOBS)

    def w_flat_small(self) -> None:
        self.dag_workload("flat-small", independent(self.sizes.small), JOBS)

    def w_flat(self) -> None:
        self.dag_workload("flat", independent(self.sizes.flat), JOBS)

    def w_chain(self) -> None:
        self.dag_workload("chain", chain(self.sizes.chain), JOBS)

    def w_layered(self) -> None:
        self.dag_workload("layered", layered(self.sizes.layers, self.sizes.width), JOBS)

    def w_flat_j8(self) -> None:
        self.dag_workload("flat-j8", independent(self.sizes.flat), 8)

    def w_flat_big(self) -> None:
        result = self.dag_workload("flat-big", independent(self.sizes.big), JOBS)
        # Runs are listed in repeat order, and each repeat had its own home.
        for rep, run in reversed(list(enumerate(result["runs"]["orch"]))):
            found = _run_id(run)
            if found:
                self.big_run = (os.path.join(self.root, "flat-big", f"home-orch-r{rep}"), found)
                break

    def w_startup(self) -> None:
        d = self.dag_dir("startup", independent(10))
        variants = [
            Variant("python -c pass", lambda rep: [self.args.python, "-c", "pass"], d),
            Variant("orch --help", lambda rep: self.orch("--help"), d),
            Variant("orch validate", lambda rep: self.orch("validate", "plan.yaml"), d),
        ]
        self.measure("startup", variants, max(self.args.repeat, MIN_CHEAP_REPEAT))

    def w_status(self) -> None:
        if self.big_run is None:
            # No timed big run in this selection: make one finished run, untimed.
            d = self.dag_dir("status-run", independent(self.sizes.big))
            home = os.path.join(d, "home")
            _progress(f"status: one {self.sizes.big}-task orch run to query (untimed)")
            run = self.run_one(
                self.orch("run", "plan.yaml", "--home", home, "--max-parallel", str(JOBS)),
                d,
                "status: the run to query",
            )
            found = _run_id(run)
            if not found:
                self.notices.append("status: SKIPPED, the orch run to query did not finish")
                return
            self.big_run = (home, found)
        home, run_id = self.big_run
        variants = [
            Variant("status", lambda rep: self.orch("status", run_id, "--home", home), self.root),
            Variant(
                "status --json",
                lambda rep: self.orch("status", run_id, "--json", "--home", home),
                self.root,
            ),
            Variant("list", lambda rep: self.orch("list", "--home", home), self.root),
        ]
        result = self.measure("status", variants, max(self.args.repeat, MIN_CHEAP_REPEAT))
        result["tasks"] = self.sizes.big

    def w_pools(self) -> None:
        n = self.sizes.pools
        d = self.dag_dir("pools", independent(n))
        pools = "pools: {" + ", ".join(f"{p}: {k}" for p, k in POOLS.items()) + "}"
        pooled = os.path.join(d, "pools.yaml")
        write_plan(
            pooled, independent(n), top=[pools], task_extra=lambda i: f", pool: {POOL_OF[i % 10]}"
        )
        ok, why = self.validate(pooled)
        if not ok:
            self.notices.append(f"pools: SKIPPED, `orch validate` rejects a `pools:` plan: {why}")
            return
        variants = [
            self.make_variant(d, JOBS),
            self.orch_variant(d, JOBS, key="orch"),
            self.orch_variant(d, JOBS, plan="pools.yaml", key="orch pools"),
        ]
        result = self.measure("pools", variants)
        result.update(tasks=n, jobs=JOBS)

    def w_idle_timeout(self) -> None:
        n, sleep = self.sizes.idle_tasks, self.sizes.idle_sleep
        cmd = ("sleep", str(sleep))
        d = self.dag_dir("idle-timeout", independent(n), cmd=cmd)
        idle = os.path.join(d, "idle.yaml")
        write_plan(
            idle,
            independent(n),
            cmd=cmd,
            task_extra=lambda i: f", idle_timeout_sec: {IDLE_TIMEOUT_SEC}",
        )
        ok, why = self.validate(idle)
        if not ok:
            self.notices.append(
                f"idle-timeout: SKIPPED, `orch validate` rejects `idle_timeout_sec`: {why}"
            )
            return
        variants = [
            self.make_variant(d, IDLE_JOBS),
            self.orch_variant(d, IDLE_JOBS, key="orch"),
            self.orch_variant(d, IDLE_JOBS, plan="idle.yaml", key="orch idle"),
        ]
        result = self.measure("idle-timeout", variants)
        result.update(tasks=n, jobs=IDLE_JOBS, sleep=sleep)

    def rss_floor(self) -> float:
        """Peak RSS reported for ``true``: a figure at this level means 'at most this'."""
        runs = [self.run_one(["true"], self.root, "rss floor") for _ in range(3)]
        return float(max(r["rss_bytes"] for r in runs)) / 1e6

    def run_selected(self, selected: Sequence[str]) -> None:
        steps: Dict[str, Callable[[], None]] = {
            "startup": self.w_startup,
            "fixed": self.w_fixed,
            "flat-small": self.w_flat_small,
            "flat": self.w_flat,
            "chain": self.w_chain,
            "layered": self.w_layered,
            "flat-j8": self.w_flat_j8,
            "pools": self.w_pools,
            "idle-timeout": self.w_idle_timeout,
            "flat-big": self.w_flat_big,
            "status": self.w_status,
        }
        for name in WORKLOADS:
            if name in selected and name in steps:
                steps[name]()


def _run_id(run: Run) -> Optional[str]:
    if run.get("rc") != 0 or "out" not in run:
        return None
    try:
        with open(run["out"], encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError:
        return None
    return first[len("run_id: ") :] if first.startswith("run_id: ") else None


# ---------------------------------------------------------------------------- table


@dataclass
class Row:
    workload: str
    make: str = "-"
    py: str = "-"
    orch: str = "-"
    ratio: str = "-"
    target: str = "-"
    result: str = "-"
    load: str = "-"
    numbers: Optional[Dict[str, Any]] = None


def _s(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _ms(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f} ms"


def _mb(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f} MB"


def _x(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}%"


def _verdict(ok: Optional[bool], quick: bool) -> str:
    if ok is None:
        return "-"
    word = "PASS" if ok else "**MISS**"
    return f"{word} (quick)" if quick else word


def _ok_runs(result: Optional[Dict[str, Any]], key: str) -> List[Run]:
    """The runs of ``key`` that exited 0: a failed run's time says nothing about the tool."""
    if result is None:
        return []
    return [r for r in result["runs"].get(key, []) if r["rc"] == 0]


def _med_wall(result: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    runs = _ok_runs(result, key)
    return median([r["wall"] for r in runs]) if runs else None


def _peak_mb(result: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    runs = _ok_runs(result, key)
    return float(max(r["rss_bytes"] for r in runs)) / 1e6 if runs else None


def _show(result: Dict[str, Any], key: str, text: str) -> str:
    """``text``, or ``failed`` when every run of ``key`` failed."""
    if result["runs"].get(key) and not _ok_runs(result, key):
        return "failed"
    return text


def _load(result: Dict[str, Any]) -> str:
    before = (result.get("load_before") or "?").split()[0]
    after = (result.get("load_after") or "?").split()[0]
    text = f"{before} → {after}"
    if result.get("create_us_before") is not None:
        text += f"; {result['create_us_before']:.0f} → {result['create_us_after']:.0f} µs"
    return text


def _failed(result: Dict[str, Any]) -> bool:
    return any(r["rc"] != 0 for runs in result["runs"].values() for r in runs)


def _n(x: int) -> str:
    return f"{x:,}"


def build_rows(bench: Bench) -> List[Row]:
    res, sz, quick = bench.results, bench.sizes, bench.args.quick
    rows: List[Row] = []

    def dag_row(name: str, title: str, target: Optional[float]) -> None:
        r = res.get(name)
        if r is None:
            return
        make, py, orch = (_med_wall(r, k) for k in ("make", "py-dag", "orch"))
        ratio = orch / make if orch is not None and make else None
        ok = None if target is None or ratio is None else ratio <= target
        rows.append(
            Row(
                title,
                _show(r, "make", _s(make)),
                _show(r, "py-dag", _s(py)),
                _show(r, "orch", _s(orch)),
                _x(ratio),
                f"≤ {target}x" if target is not None else "-",
                "ERROR" if _failed(r) else _verdict(ok, quick),
                _load(r),
                {"make_s": make, "py_dag_s": py, "orch_s": orch, "orch_over_make": ratio},
            )
        )

    dag_row("fixed", "1 task (start-up + shut-down: the per-task cost's base)", None)
    # Targets: issue 11's "done when" (ratios against make in the same run, medians).
    dag_row("flat", f"{_n(sz.flat)} independent, -j{JOBS}", 2.0)
    if "chain" in res:
        dag_row("chain", f"chain of {_n(sz.chain)}, -j{JOBS}", 2.0)
    if "layered" in res:
        e = res["layered"]["edges"]
        dag_row(
            "layered",
            f"{sz.layers} layers × {sz.width}, dense ({_n(e)} edges), -j{JOBS}",
            2.0,
        )
    dag_row("flat-big", f"{_n(sz.big)} independent, -j{JOBS}", 2.0)
    dag_row("flat-j8", f"{_n(sz.flat)} independent, -j8", None)

    # Per-task cost: (median wall(N) - median wall(1 task)) / N, same tool, -j2.
    fixed = res.get("fixed")
    costs: Dict[str, Dict[str, Optional[float]]] = {}
    if fixed is not None:
        for name, n in (("flat-small", sz.small), ("flat", sz.flat), ("flat-big", sz.big)):
            r = res.get(name)
            if r is None:
                continue
            cost: Dict[str, Optional[float]] = {}
            for key in ("make", "py-dag", "orch"):
                wall, base = _med_wall(r, key), _med_wall(fixed, key)
                cost[key] = None if wall is None or base is None else 1000.0 * (wall - base) / n
            costs[name] = cost
            ratio = cost["orch"] / cost["make"] if cost["orch"] and cost["make"] else None
            rows.append(
                Row(
                    f"per-task cost @ {_n(n)} (independent, -j{JOBS})",
                    _ms(cost["make"]),
                    _ms(cost["py-dag"]),
                    _ms(cost["orch"]),
                    _x(ratio),
                    numbers={"cost_ms": cost, "orch_over_make": ratio},
                )
            )

    def growth(big: str, small: str, label: str, target: Optional[float]) -> None:
        if big not in costs or small not in costs:
            return
        g: Dict[str, Optional[float]] = {}
        for k in ("make", "py-dag", "orch"):
            top, bottom = costs[big][k], costs[small][k]
            g[k] = top / bottom if top is not None and bottom else None
        ok = None if target is None or g["orch"] is None else g["orch"] <= target
        rows.append(
            Row(
                label,
                _x(g["make"]),
                _x(g["py-dag"]),
                _x(g["orch"]),
                "-",
                f"orch ≤ {target}x" if target is not None else "-",
                _verdict(ok, quick),
                numbers={"growth": g},
            )
        )

    growth("flat-big", "flat", f"per-task cost growth @ {_n(sz.big)} / @ {_n(sz.flat)}", 1.15)
    growth(
        "flat-big", "flat-small", f"per-task cost growth @ {_n(sz.big)} / @ {_n(sz.small)}", None
    )

    big = res.get("flat-big")
    if big is not None:
        peaks = {k: _peak_mb(big, k) for k in ("make", "py-dag", "orch")}
        top = peaks["orch"]
        ok = None if top is None else top <= 45.0
        rows.append(
            Row(
                f"peak RSS, {_n(sz.big)} independent",
                _mb(peaks["make"]),
                _mb(peaks["py-dag"]),
                _mb(peaks["orch"]),
                "-",
                "orch ≤ 45 MB",
                _verdict(ok, quick),
                _load(big),
                {"peak_rss_mb": peaks},
            )
        )

    status = res.get("status")
    if status is not None:
        for key, label, target in (
            ("status", "`orch status RUN_ID`", 0.2),
            ("status --json", "`orch status RUN_ID --json`", 0.4),
            ("list", "`orch list` (that run's home)", None),
        ):
            wall, peak = _med_wall(status, key), _peak_mb(status, key)
            ok = None
            if target is not None and wall is not None and peak is not None:
                ok = wall <= target and peak < 60.0
            rows.append(
                Row(
                    f"{label}, finished {_n(status['tasks'])}-task run",
                    orch=_show(status, key, f"{_s(wall)}, {_mb(peak)}"),
                    target=f"≤ {target} s, < 60 MB" if target is not None else "-",
                    result="ERROR" if _failed(status) else _verdict(ok, quick),
                    load=_load(status),
                    numbers={"orch_s": wall, "peak_rss_mb": peak},
                )
            )

    startup = res.get("startup")
    if startup is not None:
        base = _med_wall(startup, "python -c pass")
        for key, label in (
            ("orch --help", "start-up: `orch --help`"),
            ("orch validate", "start-up: `orch validate` of a 10-task plan"),
        ):
            wall = _med_wall(startup, key)
            ratio = wall / base if wall is not None and base else None
            rows.append(
                Row(
                    label,
                    py=f"{_s(base)} (`python3 -c pass`)",
                    orch=_show(startup, key, _s(wall)),
                    ratio=f"{_x(ratio)} vs `python3 -c pass`",
                    result="ERROR" if _failed(startup) else "-",
                    load=_load(startup),
                    numbers={"python_pass_s": base, "orch_s": wall, "orch_over_python": ratio},
                )
            )

    pools = res.get("pools")
    if pools is not None:
        make, plain, pooled = (_med_wall(pools, k) for k in ("make", "orch", "orch pools"))
        ratio = pooled / plain if pooled is not None and plain else None
        ok = None if ratio is None else ratio <= 1.1
        title = f"{_n(pools['tasks'])} independent, -j{JOBS}"
        rows.append(
            Row(
                f"{title}, no pools (pools baseline)",
                make=_show(pools, "make", _s(make)),
                orch=_show(pools, "orch", _s(plain)),
                ratio=_x(plain / make if plain is not None and make else None),
                load=_load(pools),
            )
        )
        rows.append(
            Row(
                f"{title}, 4 pools of 1..4 slots",
                make=_show(pools, "make", _s(make)),
                orch=_show(pools, "orch pools", _s(pooled)),
                ratio=f"{_x(ratio)} vs no pools",
                target="≤ 1.1x no pools",
                result="ERROR" if _failed(pools) else _verdict(ok, quick),
                load=_load(pools),
                numbers={"make_s": make, "orch_s": plain, "orch_pools_s": pooled, "ratio": ratio},
            )
        )

    idle = res.get("idle-timeout")
    if idle is not None:

        def cpu_pct(key: str) -> Optional[float]:
            pcts = [
                100.0 * r["self_cpu"] / r["wall"]
                for r in _ok_runs(idle, key)
                if r.get("self_cpu") is not None and r["wall"] > 0
            ]
            return median(pcts) if pcts else None

        make, plain, watched = (cpu_pct(k) for k in ("make", "orch", "orch idle"))
        title = f"{idle['tasks']} × `sleep {idle['sleep']}`, -j{idle['jobs']}: own CPU, % of a core"
        rows.append(
            Row(
                f"{title}, no idle timeout",
                make=_show(idle, "make", _pct(make)),
                orch=_show(idle, "orch", _pct(plain)),
                load=_load(idle),
            )
        )
        diff = None if watched is None or plain is None else watched - plain
        rows.append(
            Row(
                f"{title}, `idle_timeout_sec: {IDLE_TIMEOUT_SEC}`",
                make=_show(idle, "make", _pct(make)),
                orch=_show(idle, "orch idle", _pct(watched)),
                ratio="-" if diff is None else f"{diff:+.2f} pt vs none",
                result="ERROR" if _failed(idle) else "-",
                load=_load(idle),
                numbers={"make_pct": make, "orch_pct": plain, "orch_idle_pct": watched},
            )
        )
    return rows


def render(rows: List[Row], info: Dict[str, Any], notices: List[str], errors: List[str]) -> str:
    commit = info["commit"] or "?"
    lines = [
        f"orch engine benchmark, {info['date']}: {info['mode']}, median of {info['repeat']} runs "
        "(start-up and status: at least 5), tools alternating run by run",
        f"machine: nproc {info['nproc']}, load average {info['load_before']} (start) → "
        f"{info['load_after']} (end); Python {info['python_version']}; {info['make_version']}; "
        f"orch {commit}",
        f"scratch: {info['scratch_fs']}; a file creation there: {info['create_us_start']:.0f} µs "
        f"(start) → {info['create_us_end']:.0f} µs (end); RSS floor of the measuring parent: "
        f"{info['rss_floor_mb']:.1f} MB (a make or py-dag figure near it means 'at most')",
        f"caveat: {CAVEAT}",
        "",
        "| workload | make | py-dag | orch | orch/make | target | result "
        "| before → after: load 1m; µs per file creation |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.make} | {r.py} | {r.orch} | {r.ratio} | {r.target} "
            f"| {r.result} | {r.load} |"
        )
    if notices:
        lines.append("")
        lines.extend(f"**NOTICE** {n}" for n in notices)
    results = [r.result for r in rows if r.result not in ("-", "ERROR")]
    missed = sum(1 for r in results if "MISS" in r)
    lines.append("")
    lines.append(
        f"{len(results)} targets measured, {missed} missed"
        + (" (quick sizes: indicative only)" if info["mode"] != "full" else "")
    )
    for e in errors:
        lines.append(f"**ERROR** {e}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- machine info


def _first_line(argv: Sequence[str], cwd: Optional[str] = None) -> Optional[str]:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # a read: never let git refresh the index
    try:
        out = subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    text = out.stdout.strip().splitlines()
    return text[0] if text else ""


def _commit(root: str) -> Optional[str]:
    head = _first_line(["git", "rev-parse", "--short", "HEAD"], cwd=root)
    if not head:
        return None
    dirty = _first_line(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "orch"], cwd=root
    )
    return f"commit {head}" + (" + uncommitted changes in orch/" if dirty else "")


def _filesystem(path: str) -> str:
    """``PATH on TYPE (DEVICE, OPTIONS)`` from /proc/mounts: the longest matching mount point."""
    path = os.path.realpath(path)
    best: Optional[List[str]] = None
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                mount = parts[1]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and (best is None or len(mount) > len(best[1])):
                    best = parts
    except OSError:
        return path
    if best is None:
        return path
    return f"{path} on {best[2]} ({best[0]}, {best[3]})"


# ---------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the orch engine against make -j and a minimal Python runner "
        "(the 'Make-class speed' table).",
        epilog="Workloads for --only: " + ", ".join(w for w in WORKLOADS),
    )
    p.add_argument(
        "--repeat",
        "--repeats",
        "-k",
        type=int,
        default=None,
        metavar="N",
        help=f"runs of each tool per workload, median kept ({DEFAULT_REPEAT}; --quick: "
        f"{QUICK_REPEAT})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller sizes ({QUICK.flat} / {QUICK.big} tasks, ...) and {QUICK_REPEAT} repeats: "
        "a smoke run; its PASS/MISS are indicative only",
    )
    p.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    p.add_argument("--python", default=sys.executable, help="interpreter for orch and py-dag")
    p.add_argument("--make", default="make", help="GNU make to compare with")
    p.add_argument(
        "--orch-root",
        default=REPO,
        metavar="DIR",
        help="directory holding the orch package to measure (default: this checkout)",
    )
    p.add_argument("--tmpdir", help="where the scratch directory goes (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE as it is (default: cache bytecode in the scratch dir)",
    )
    p.add_argument("--_baseline", nargs=2, metavar=("GRAPH", "JOBS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._baseline:
        return args
    args.orch_root = os.path.abspath(args.orch_root)
    if not os.path.isfile(os.path.join(args.orch_root, "orch", "__main__.py")):
        p.error(f"no orch package in {args.orch_root}")
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    selected = set(only or WORKLOADS)
    for name in list(selected):
        selected.update(NEEDS.get(name, []))
    args.selected = [w for w in WORKLOADS if w in selected]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args._baseline:
        return baseline_main(args._baseline[0], int(args._baseline[1]))
    if shutil.which(args.make) is None:
        sys.stderr.write(f"bench: {args.make} not found\n")
        return 2
    version = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        check=False,
        text=True,
    ).stdout.strip()
    root = tempfile.mkdtemp(prefix="orch-bench-", dir=args.tmpdir)
    os.mkdir(os.path.join(root, "out"))
    info: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "mode": "quick" if args.quick else "full",
        "repeat": args.repeat,
        "nproc": os.cpu_count(),
        "load_before": loadavg(),
        "python": args.python,
        "python_version": version,
        "make_version": _first_line([args.make, "--version"]) or "make ?",
        "orch_root": args.orch_root,
        "commit": _commit(args.orch_root),
        "scratch_fs": _filesystem(root),
        "selected": args.selected,
        "sizes": dataclasses.asdict(QUICK if args.quick else FULL),
    }
    bench = Bench(args, root)
    try:
        info["create_us_start"] = bench.create_cost_us()
        info["rss_floor_mb"] = bench.rss_floor()
        bench.run_selected(args.selected)
        info["load_after"] = loadavg()
        info["create_us_end"] = bench.create_cost_us()
    finally:
        # Everything is deleted at the very end: deleting thousands of files between two timed
        # runs makes the next run's file creations slower (see the caveat).
        if args.keep:
            _progress(f"scratch directory kept: {root}")
        else:
            _progress(f"deleting {root}")
            shutil.rmtree(root, ignore_errors=True)
    rows = build_rows(bench)
    print(render(rows, info, bench.notices, bench.errors))
    if args.json:
        for result in bench.results.values():
            for runs in result["runs"].values():
                for run in runs:
                    run.pop("out", None)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "info": info,
                    "workloads": bench.results,
                    "rows": [r.__dict__ for r in rows],
                    "notices": bench.notices,
                    "errors": bench.errors,
                },
                f,
                indent=2,
            )
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
