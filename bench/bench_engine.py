#!/usr/bin/env python3
"""Engine benchmark: orch against GNU make -j and a minimal Python baseline on the same DAGs.

A report, not a test: it always exits 0 once it has run (2 on bad arguments), prints a Markdown
table and one PASS/MISS line per target, and ``--json PATH`` keeps the raw numbers.

Every tool runs as its own process, so each wall time includes that tool's start-up:
  make      ``make -s -j N -f Makefile all`` on a generated Makefile of phony targets
  python    this file re-invoked as ``--_baseline GRAPH N``: a ThreadPoolExecutor of N threads
            calling ``subprocess.run(["true"])``, releasing dependents as tasks finish
  orch      ``python3 -m orch run plan.yaml --home TMP --max-parallel N`` (stdout/stderr to files)

Run ``python3 bench/bench_engine.py --help``; bench/README.md says what each row means.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("make", "python", "orch")
RUN_TIMEOUT_SEC = 1800.0

# deps[i] lists the indexes task i depends on; tasks are named t0..t{n-1} in that order.
Graph = List[List[int]]


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


# (name, graph builder, size class used by --quick and the overhead targets)
SCENARIOS: List[Tuple[str, Callable[[], Graph], int]] = [
    ("independent-1", lambda: independent(1), 1),
    ("independent-100", lambda: independent(100), 100),
    ("independent-1000", lambda: independent(1000), 1000),
    ("independent-10000", lambda: independent(10000), 10000),
    ("chain-1000", lambda: chain(1000), 1000),
    ("layered-50x20", lambda: layered(50, 20), 1000),
]


def write_plan(path: str, deps: Graph) -> None:
    lines = ["goal: orch engine benchmark", "tasks:"]
    for i, parents in enumerate(deps):
        line = f'  - {{id: t{i}, cmd: ["true"]'
        if parents:
            line += ", depends_on: [" + ", ".join(f"t{p}" for p in parents) + "]"
        lines.append(line + "}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_makefile(path: str, deps: Graph) -> None:
    """Phony targets, one per task, with the same prerequisite edges as the plan."""
    names = [f"t{i}" for i in range(len(deps))]
    has_dependent = set(p for parents in deps for p in parents)
    sinks = [names[i] for i in range(len(deps)) if i not in has_dependent]
    out = [".PHONY: all " + " ".join(names), "all: " + " ".join(sinks)]
    for i, parents in enumerate(deps):
        out.append(f"{names[i]}: " + " ".join(names[p] for p in parents))
        out.append("\ttrue")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


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


def timed_run(argv: Sequence[str], cwd: str, out_path: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Run ``argv``; wall seconds, exit code and peak RSS (MiB) from wait4."""
    with open(out_path, "wb") as out, open(out_path + ".err", "wb") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        timer = threading.Timer(RUN_TIMEOUT_SEC, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - began
    proc.returncode = _exit_code(status)  # reaped here: keep Popen from waiting again
    # ru_maxrss: KiB on Linux, bytes on macOS. It covers the process itself and the children
    # it reaped; a `true` child is far smaller than orch, so this is orch's own peak.
    rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    cpu = usage.ru_utime + usage.ru_stime  # the process and the children it reaped
    return {"wall": wall, "rc": proc.returncode, "rss_mib": rss, "cpu": cpu}


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()[-4000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class Bench:
    def __init__(self, args: argparse.Namespace, root: str) -> None:
        self.args = args
        self.root = root
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
        self.status_home: Optional[Tuple[str, str]] = None  # (home, run_id) of a 10,000 run
        self.errors: List[str] = []
        self.trash: List[str] = []  # orch homes to delete between scenarios

    def command(self, tool: str, scen_dir: str, jobs: int, home: str) -> List[str]:
        if tool == "make":
            return [self.args.make, "-s", f"-j{jobs}", "-f", "Makefile", "all"]
        if tool == "python":
            return [
                self.args.python,
                os.path.abspath(__file__),
                "--_baseline",
                "graph.json",
                str(jobs),
            ]
        return [
            self.args.python, "-m", "orch", "run", "plan.yaml",
            "--home", home, "--max-parallel", str(jobs),
        ]  # fmt: skip

    def one(self, tool: str, name: str, scen_dir: str, jobs: int, rep: int) -> Dict[str, Any]:
        home = os.path.join(scen_dir, f"home-j{jobs}-r{rep}")
        out = os.path.join(scen_dir, f"{tool}-j{jobs}-r{rep}.out")
        # Untimed: the write-back of earlier runs must not land in this one (on a VM's ext4 it
        # made orch's file creations, hence its wall time, several times slower and erratic).
        os.sync()
        result = timed_run(self.command(tool, scen_dir, jobs, home), scen_dir, out, self.env)
        if result["rc"] != 0:
            self.errors.append(
                f"{tool} {name} -j{jobs} exited {result['rc']}: {_tail(out + '.err')!r}"
            )
        if tool == "orch":
            self._after_orch(name, home, out, result)
        return result

    def _after_orch(self, name: str, home: str, out: str, result: Dict[str, Any]) -> None:
        if name == "independent-10000" and result["rc"] == 0:
            with open(out, encoding="utf-8") as f:
                first = f.readline().strip()
            if first.startswith("run_id: "):
                if self.status_home is not None:
                    self.trash.append(self.status_home[0])
                self.status_home = (home, first[len("run_id: ") :])
                return
        # Removed at the end of the scenario, not now: deleting thousands of files between two
        # timed runs slowed the next run's file creations down (ext4 journal, discard).
        self.trash.append(home)

    def empty_trash(self) -> None:
        keep = self.status_home[0] if self.status_home else None
        for home in self.trash:
            if home != keep and not self.args.keep:
                shutil.rmtree(home, ignore_errors=True)
        self.trash = []
        os.sync()

    def scenario(self, name: str, deps: Graph, jobs_list: Sequence[int]) -> List[Dict[str, Any]]:
        scen_dir = os.path.join(self.root, name)
        os.mkdir(scen_dir)
        write_plan(os.path.join(scen_dir, "plan.yaml"), deps)
        write_makefile(os.path.join(scen_dir, "Makefile"), deps)
        with open(os.path.join(scen_dir, "graph.json"), "w", encoding="utf-8") as f:
            json.dump(deps, f)
        rows = []
        for jobs in jobs_list:
            walls: Dict[str, List[float]] = {t: [] for t in TOOLS}
            rss: Dict[str, List[float]] = {t: [] for t in TOOLS}
            cpu: Dict[str, List[float]] = {t: [] for t in TOOLS}
            for rep in range(self.args.repeats):
                # Interleaved, so that a burst of load from other processes hits all three.
                for tool in TOOLS:
                    _progress(f"{name} -j{jobs} {tool} #{rep + 1}")
                    r = self.one(tool, name, scen_dir, jobs, rep)
                    walls[tool].append(r["wall"])
                    rss[tool].append(r["rss_mib"])
                    cpu[tool].append(r["cpu"])
            rows.append(
                {
                    "scenario": name,
                    "tasks": len(deps),
                    "jobs": jobs,
                    "walls": walls,
                    "rss_mib": rss,
                    "cpu": cpu,
                }
            )
        self.empty_trash()
        return rows

    def status_time(self) -> Optional[Dict[str, Any]]:
        if self.status_home is None:
            return None
        home, run_id = self.status_home
        argv = [self.args.python, "-m", "orch", "status", run_id, "--home", home]
        walls = []
        for rep in range(max(3, self.args.repeats)):
            _progress(f"orch status (10,000 tasks) #{rep + 1}")
            out = os.path.join(self.root, f"status-{rep}.out")
            r = timed_run(argv, self.root, out, self.env)
            if r["rc"] != 0:
                self.errors.append(f"orch status exited {r['rc']}: {_tail(out + '.err')!r}")
            walls.append(r["wall"])
        return {"walls": walls, "best": min(walls)}


def _progress(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def loadavg() -> Optional[str]:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return (
            None if not hasattr(os, "getloadavg") else " ".join(f"{x:.2f}" for x in os.getloadavg())
        )


# ---------------------------------------------------------------------------- derived numbers


def derive(rows: List[Dict[str, Any]]) -> None:
    """Add best walls, per-task overhead and ratios to each row (in place).

    per-task overhead = (best wall(N tasks) - best wall(1 task)) / (N - 1), same tool and -j:
    the marginal cost of one more task, start-up and shut-down of the tool taken out.
    """
    single = {r["jobs"]: r for r in rows if r["scenario"] == "independent-1"}
    for r in rows:
        r["best"] = {t: min(r["walls"][t]) for t in TOOLS}
        r["peak_rss_mib"] = {t: max(r["rss_mib"][t]) for t in TOOLS}
        r["min_cpu"] = {t: min(r["cpu"][t]) for t in TOOLS}
        base = single.get(r["jobs"])
        n = r["tasks"]
        if base is not None and n > 1:
            r["per_task_ms"] = {
                t: 1000.0 * (r["best"][t] - base["best"][t]) / (n - 1) for t in TOOLS
            }
        else:
            r["per_task_ms"] = None
        r["orch_over_make"] = r["best"]["orch"] / r["best"]["make"]
        r["orch_over_python"] = r["best"]["orch"] / r["best"]["python"]
        r["orch_extra_ms_per_task"] = 1000.0 * (r["best"]["orch"] - r["best"]["make"]) / n


def _find(rows: List[Dict[str, Any]], name: str, jobs: int) -> Optional[Dict[str, Any]]:
    for r in rows:
        if r["scenario"] == name and r["jobs"] == jobs:
            return r
    return None


Check = Tuple[str, str, Optional[bool]]


def targets(
    rows: List[Dict[str, Any]], status: Optional[Dict[str, Any]], jobs_list: Sequence[int]
) -> List[Check]:
    """One (target, measured, passed or None when not measured) per target of the issue."""
    out: List[Check] = []
    r = _find(rows, "independent-1000", 2)
    if r:
        x = r["orch_over_make"]
        out.append(("1,000 independent at -j2 <= 1.5x make", f"{x:.2f}x", x <= 1.5))
    else:
        out.append(("1,000 independent at -j2 <= 1.5x make", "not measured", None))
    for j in jobs_list:
        r = _find(rows, "chain-1000", j)
        if r:
            x = r["orch_over_make"]
            out.append((f"1,000-task chain at -j{j} <= 2.5x make", f"{x:.2f}x", x <= 2.5))
    for j in jobs_list:
        small, large = _find(rows, "independent-100", j), _find(rows, "independent-10000", j)
        label = f"per-task overhead at 10,000 <= 1.2x at 100 (-j{j})"
        if small and large and small["per_task_ms"] and large["per_task_ms"]:
            a, b = small["per_task_ms"]["orch"], large["per_task_ms"]["orch"]
            x = b / a if a > 0 else float("inf")
            out.append((label, f"{b:.2f} / {a:.2f} ms = {x:.2f}x", x <= 1.2))
        else:
            out.append((label, "not measured (needs 1, 100 and 10,000 rows)", None))
    big = [r for r in rows if r["scenario"] == "independent-10000"]
    if big:
        peak = max(r["peak_rss_mib"]["orch"] for r in big)
        out.append(("orch peak RSS at 10,000 tasks < 60 MB", f"{peak:.1f} MiB", peak < 60))
    else:
        out.append(("orch peak RSS at 10,000 tasks < 60 MB", "not measured", None))
    if status:
        out.append(
            (
                "`orch status` of a finished 10,000-task run < 0.3 s",
                f"{status['best']:.3f} s",
                status["best"] < 0.3,
            )
        )
    else:
        out.append(("`orch status` of a finished 10,000-task run < 0.3 s", "not measured", None))
    return out


# ---------------------------------------------------------------------------- rendering


def render(
    rows: List[Dict[str, Any]],
    info: Dict[str, Any],
    checks: List[Check],
    status: Optional[Dict[str, Any]],
) -> str:
    lines = [
        f"orch engine benchmark — best of {info['repeats']}, "
        f"python {info['python_version']}, {info['make_version']}, {info['cpus']} CPUs",
        f"load average before: {info['load_before']}  after: {info['load_after']}",
        "",
        "| scenario | tasks | -j | make s | python s | orch s | orch/make | orch/python "
        "| ms/task make | ms/task python | ms/task orch | orch−make ms/task | orch CPU s "
        "| orch RSS MiB |",
        "| --- " + "| ---: " * 13 + "|",
    ]
    for r in rows:
        b, per = r["best"], r["per_task_ms"]
        pt = [f"{per[t]:.3f}" for t in TOOLS] if per else ["-", "-", "-"]
        lines.append(
            f"| {r['scenario']} | {r['tasks']} | {r['jobs']} | {b['make']:.3f} | "
            f"{b['python']:.3f} | {b['orch']:.3f} | {r['orch_over_make']:.2f}x | "
            f"{r['orch_over_python']:.2f}x | {pt[0]} | {pt[1]} | {pt[2]} | "
            f"{r['orch_extra_ms_per_task']:.3f} | {r['min_cpu']['orch']:.2f} | "
            f"{r['peak_rss_mib']['orch']:.1f} |"
        )
    if status:
        lines.append("")
        lines.append(
            f"`orch status RUN_ID` on a finished 10,000-task run: best {status['best']:.3f} s "
            f"(all: {', '.join(f'{w:.3f}' for w in status['walls'])})"
        )
    lines.append("")
    lines.append("Targets:")
    missed = 0
    for label, measured, ok in checks:
        if ok is None:
            mark = "SKIP"
        elif ok:
            mark = "PASS"
        else:
            mark = "**MISS**"
            missed += 1
        lines.append(f"- {mark} {label}: {measured}")
    measured_count = sum(1 for _, _, ok in checks if ok is not None)
    summary = (
        f"{missed} of {measured_count} measured targets MISSED"
        if missed
        else (f"all {measured_count} measured targets met")
    )
    lines.append("")
    lines.append(f"**{summary}**" if missed else summary)
    return "\n".join(lines)


def _make_version(make: str) -> str:
    try:
        out = subprocess.run([make, "--version"], capture_output=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "make ?"
    return out.stdout.decode("utf-8", "replace").splitlines()[0] if out.stdout else "make ?"


# ---------------------------------------------------------------------------- main


def _jobs(text: str) -> List[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 2,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the orch engine against make -j and a minimal Python runner.",
    )
    p.add_argument("--repeats", "-k", type=int, default=3, help="runs per cell, best kept (3)")
    p.add_argument("--jobs", type=_jobs, default=[2, 8], help="--max-parallel values (2,8)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="one repeat, no 10,000-task rows (the RSS, overhead and status targets are skipped)",
    )
    p.add_argument(
        "--only", default="", help="comma-separated scenario names (default: all; see README)"
    )
    p.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    p.add_argument("--python", default=sys.executable, help="interpreter for orch and baseline")
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
    args.orch_root = os.path.abspath(args.orch_root)
    if not os.path.isfile(os.path.join(args.orch_root, "orch", "__main__.py")):
        p.error(f"no orch package in {args.orch_root}")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.quick:
        args.repeats = 1
    known = {name for name, _, _ in SCENARIOS}
    args.only = [s for s in args.only.split(",") if s]
    unknown = [s for s in args.only if s not in known]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args._baseline:
        return baseline_main(args._baseline[0], int(args._baseline[1]))
    if shutil.which(args.make) is None:
        sys.stderr.write(f"bench: {args.make} not found\n")
        return 2
    chosen = [
        (name, build)
        for name, build, size in SCENARIOS
        if (not args.only or name in args.only or name == "independent-1")
        and not (args.quick and size >= 10000)
    ]
    info = {
        "repeats": args.repeats,
        "jobs": args.jobs,
        "python_version": subprocess.run(
            [args.python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.strip(),
        "make_version": _make_version(args.make),
        "cpus": os.cpu_count(),
        "load_before": loadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    root = tempfile.mkdtemp(prefix="orch-bench-", dir=args.tmpdir)
    bench = Bench(args, root)
    rows: List[Dict[str, Any]] = []
    try:
        for name, build in chosen:
            rows.extend(bench.scenario(name, build(), args.jobs))
        status = bench.status_time()
    finally:
        if args.keep:
            _progress(f"scratch directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    info["load_after"] = loadavg()
    derive(rows)
    checks = targets(rows, status, args.jobs)
    print(render(rows, info, checks, status))
    for error in bench.errors:
        print(f"**ERROR** {error}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "info": info,
                    "rows": rows,
                    "status": status,
                    "targets": [{"target": t, "measured": m, "passed": ok} for t, m, ok in checks],
                    "errors": bench.errors,
                },
                f,
                indent=2,
            )
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
