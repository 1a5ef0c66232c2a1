#!/usr/bin/env python3
"""Slurm benchmark: N no-op tasks through orch's slurm executor against bare `sbatch --wait`.

    python3 bench/bench_slurm.py [--tasks 200] [--max-parallel 8] [--repeat 1] [--json FILE]

Both sides run in the same invocation, alternating (orch first, then bare, ``--repeat`` times),
on the cluster that scripts/slurm_up.sh brings up (``--up`` runs it first):

  orch   ``python3 -m orch run plan.yaml --home TMP --max-parallel P`` on a plan of N tasks
         ``cmd: ["true"]`` with ``executor: slurm``: one sbatch job per task, through orch's
         wrapper, logs appended to the run directory
  bare   ``seq N | xargs -P P -I{} sbatch --wait --parsable --quiet --output=DIR/{}.out
         --error=DIR/{}.err --job-name=bare-{} --wrap true``: the same jobs, P in flight,
         each waited for by sbatch itself

Reported per side: wall time, wall time per job, and CPU time per job of the submitting side
(user + system of the process tree on this machine: orch and the sbatch/squeue/scancel it ran,
or xargs and its sbatch processes; the jobs themselves run under slurmstepd and are not
counted). orch's overhead per job is ``(orch wall - bare wall) / N`` as a share of bare's wall
per job (negative: orch was faster; target < 25%). A report, not a test: exits 0 once it ran
(2 on bad arguments or when Slurm is not there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 0.25


def _measure(argv: List[str], cwd: str, env: Dict[str, str]) -> Tuple[int, float, float]:
    """(exit code, wall seconds, CPU seconds of the process and the children it reaped)."""
    began = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - began
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    proc.returncode = code  # reaped by wait4 (for its rusage): Popen must not wait again
    return code, wall, usage.ru_utime + usage.ru_stime


def _orch_once(root: str, tasks: int, parallel: int, index: int) -> Dict[str, Any]:
    work = os.path.join(root, f"orch-{index}")
    os.makedirs(work)
    lines = ["executor: slurm", "tasks:"]
    lines += [f'  - {{id: t{i}, cmd: ["true"]}}' for i in range(tasks)]
    with open(os.path.join(work, "plan.yaml"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    env = dict(os.environ, PYTHONPATH=REPO, NO_COLOR="1")
    argv = [sys.executable, "-m", "orch", "run", "plan.yaml", "--home", "home"]
    argv += ["--max-parallel", str(parallel)]
    code, wall, cpu = _measure(argv, work, env)
    return {"exit": code, "wall": wall, "cpu": cpu}


def _bare_once(root: str, tasks: int, parallel: int, index: int) -> Dict[str, Any]:
    out = os.path.join(root, f"bare-{index}")
    os.makedirs(out)
    script = (
        f"seq {tasks} | xargs -P {parallel} -I{{}} sbatch --wait --parsable --quiet "
        f"--output={out}/{{}}.out --error={out}/{{}}.err --job-name=bare-{index}-{{}} "
        "--wrap true"
    )
    code, wall, cpu = _measure(["sh", "-c", script], out, dict(os.environ))
    return {"exit": code, "wall": wall, "cpu": cpu}


def _summary(runs: List[Dict[str, Any]], tasks: int) -> Dict[str, Any]:
    ok = [r for r in runs if r["exit"] == 0]
    if not ok:
        return {"runs": runs, "failed": True}
    wall = statistics.median(r["wall"] for r in ok)
    cpu = statistics.median(r["cpu"] for r in ok)
    return {
        "runs": runs,
        "wall": wall,
        "wall_per_job": wall / tasks,
        "cpu_per_job": cpu / tasks,
        "failed_runs": len(runs) - len(ok),
    }


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--max-parallel", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (median kept)")
    parser.add_argument("--up", action="store_true", help="run scripts/slurm_up.sh first")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.max_parallel < 1 or args.repeat < 1:
        parser.error("--tasks, --max-parallel and --repeat must be >= 1")
    if args.up:
        subprocess.run(["bash", os.path.join(REPO, "scripts", "slurm_up.sh")], check=False)
    missing = [c for c in ("sbatch", "squeue", "scancel", "scontrol") if not shutil.which(c)]
    if missing or subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        sys.stderr.write("bench_slurm: no Slurm cluster here (try --up, as root)\n")
        return 2
    root = tempfile.mkdtemp(prefix="orch-bench-slurm-")
    orch_runs: List[Dict[str, Any]] = []
    bare_runs: List[Dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            orch_runs.append(_orch_once(root, args.tasks, args.max_parallel, i))
            print(f"orch run {i + 1}: {orch_runs[-1]['wall']:.1f}s", file=sys.stderr)
            bare_runs.append(_bare_once(root, args.tasks, args.max_parallel, i))
            print(f"bare run {i + 1}: {bare_runs[-1]['wall']:.1f}s", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    orch = _summary(orch_runs, args.tasks)
    bare = _summary(bare_runs, args.tasks)
    result: Dict[str, Any] = {
        "tasks": args.tasks,
        "max_parallel": args.max_parallel,
        "cpus": os.cpu_count(),
        "orch": orch,
        "bare": bare,
    }
    print(
        f"{args.tasks} no-op jobs, {args.max_parallel} in flight, "
        f"median of {args.repeat} run(s) per side, same invocation"
    )
    print(f"{'':6}{'wall':>9}{'wall/job':>11}{'cpu/job':>10}")
    for name, side in (("orch", orch), ("bare", bare)):
        if side.get("failed"):
            print(f"{name:6}{'failed':>9}")
            continue
        wall, per_job, cpu = side["wall"], side["wall_per_job"], side["cpu_per_job"]
        print(f"{name:6}{wall:>8.1f}s{per_job * 1000:>9.0f}ms{cpu * 1000:>8.1f}ms")
    if not orch.get("failed") and not bare.get("failed"):
        overhead = (orch["wall"] - bare["wall"]) / args.tasks
        share = overhead / bare["wall_per_job"]
        result["overhead_per_job"] = overhead
        result["overhead_share"] = share
        verdict = "meets" if share < TARGET else "MISSES"
        print(
            f"orch overhead per job: {overhead * 1000:+.0f} ms = {share:+.0%} of bare "
            f"sbatch --wait per job ({verdict} the < {TARGET:.0%} target)"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
