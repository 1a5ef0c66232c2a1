#!/usr/bin/env python3
"""Release 0.1 DoD self-check: run the README's checklist in order and say what passed.

    python tools/dod_check.py [--skip-quality-gates] [--home DIR] [--json] [--json-out PATH]
                              [--orch COMMAND]

Steps, from the repository root (the example plans name tools/fake_agent.py relative to it):

  basic       orch run examples/plan_basic.yaml                  exit 0, SUCCESS, report written
  parallel    orch run examples/plan_parallel.yaml --max-parallel 2
                                                                 exit 0, lint and unit overlap
  fail_retry  orch run examples/plan_fail_retry.yaml             exit 3, flaky FAILED after 3
                                                                 attempts, downstream SKIPPED
  resume      orch resume <basic run>                            exit 0, nothing run again
  status      orch status <basic run>                            exit 0
  logs        orch logs <basic run> --task inspect --tail 50     exit 0, inspect's output
  cancel      orch run examples/plan_cancel.yaml, then orch cancel <it>
                                                                 'cancel requested', run exit 4
  quality gates (unless --skip-quality-gates): ruff format --check ., ruff check ., mypy, pytest

orch is the `orch` console script when one is on PATH, else `python -m orch` run from the
repository root (no install needed); --orch overrides both, e.g. --orch "python3 dist/orch.pyz".
The runs go to --home (default: orch's own default, $ORCH_HOME or .orch in the repository
root), so they can be looked at afterwards with `orch status RUN_ID`. Every step prints its
command and outcome; a failing step does not stop the independent ones. Exit 0 if every step
passed, else 1, naming the failing steps. With --json the summary (result, home, run ids,
each step's command, exit and ok) is printed last on stdout and the progress goes to stderr.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, TextIO

__all__ = ["main"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ORCH_TIMEOUT = 120.0
_GATE_TIMEOUT = 1800.0


class _Fail(Exception):
    """The step's expectation did not hold; the message says what was seen instead."""


class _Step:
    """One checklist item: the commands it ran, their exits, and whether it passed."""

    def __init__(self, name: str, expected_exit: int) -> None:
        self.name = name
        self.expected_exit = expected_exit
        self.commands: List[Dict[str, Any]] = []
        self.ok = False
        self.detail = ""
        self.run_id: Optional[str] = None
        self.duration_sec = 0.0
        self.primary = 0  # index in commands of the one the step is about

    def record(self, argv: List[str], exit_code: Optional[int], primary: bool = False) -> None:
        if primary:
            self.primary = len(self.commands)
        self.commands.append({"command": shlex.join(argv), "exit": exit_code})

    def as_json(self) -> Dict[str, Any]:
        none: Dict[str, Any] = {"command": None, "exit": None}
        first = self.commands[self.primary] if self.commands else none
        return {
            "name": self.name,
            "command": first["command"],
            "exit": first["exit"],
            "expected_exit": self.expected_exit,
            "ok": self.ok,
            "detail": self.detail,
            "run_id": self.run_id,
            "duration_sec": round(self.duration_sec, 3),
            "commands": self.commands,
        }


class _Checker:
    """Runs orch and the quality gates from the repository root, one step at a time."""

    def __init__(self, orch: List[str], home: str, out: TextIO) -> None:
        self.orch_argv = orch
        self.home = home
        self.out = out
        self.env = {k: v for k, v in os.environ.items() if k != "ORCH_HOME"}
        self.env["NO_COLOR"] = "1"
        self.run_ids: Dict[str, str] = {}
        self.step = _Step("-", 0)

    def argv(self, *args: str) -> List[str]:
        return [*self.orch_argv, *args, "--home", self.home]

    def orch(
        self, *args: str, expect: int = 0, primary: bool = False
    ) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        try:
            proc = subprocess.run(
                argv,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_ORCH_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            self.step.record(argv, None, primary)
            raise _Fail(f"timed out after {_ORCH_TIMEOUT:g}s: {shlex.join(argv)}") from None
        except OSError as exc:
            self.step.record(argv, None, primary)
            raise _Fail(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        self.step.record(argv, proc.returncode, primary)
        if proc.returncode != expect:
            raise _Fail(
                f"expected exit {expect}, got {proc.returncode}: {shlex.join(argv)}\n"
                + _excerpt(proc.stdout + proc.stderr)
            )
        return proc

    def state(self, run_id: str) -> Dict[str, Any]:
        proc = self.orch("status", run_id, "--json")
        try:
            data = json.loads(proc.stdout)
        except ValueError as exc:
            raise _Fail(f"orch status --json printed no JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
            raise _Fail("orch status --json has no 'tasks' object")
        return data

    def started_run(self, proc: subprocess.CompletedProcess[str]) -> str:
        run_id = _run_id(proc.stdout)
        self.step.run_id = run_id
        self.run_ids[self.step.name] = run_id
        return run_id

    def needs(self, step: str) -> str:
        if step not in self.run_ids:
            raise _Fail(f"needs the run of step '{step}', which did not produce one")
        return self.run_ids[step]


def _excerpt(text: str, lines: int = 20) -> str:
    tail = text.strip().splitlines()[-lines:]
    return "\n".join("    | " + line for line in tail)


def _run_id(stdout: str) -> str:
    first = stdout.splitlines()[0] if stdout else ""
    if not first.startswith("run_id: "):
        raise _Fail(f"the first line of stdout is not 'run_id: RUN_ID': {first!r}")
    return first[len("run_id: ") :].strip()


def _task_statuses(state: Dict[str, Any]) -> Dict[str, Any]:
    return {tid: task.get("status") for tid, task in state["tasks"].items()}


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise _Fail(message)


def _step_basic(c: _Checker) -> str:
    run_id = c.started_run(c.orch("run", "examples/plan_basic.yaml"))
    state = c.state(run_id)
    statuses = _task_statuses(state)
    _expect(state.get("status") == "SUCCESS", f"run status {state.get('status')}, tasks {statuses}")
    report = os.path.join(c.home, "runs", run_id, "report", "final_report.md")
    _expect(os.path.isfile(report), f"no final report at {report}")
    return f"run {run_id}: SUCCESS ({len(statuses)} tasks), report present"


def _step_parallel(c: _Checker) -> str:
    run_id = c.started_run(c.orch("run", "examples/plan_parallel.yaml", "--max-parallel", "2"))
    state = c.state(run_id)
    _expect(state.get("status") == "SUCCESS", f"run status {state.get('status')}")
    tasks = state["tasks"]
    try:
        spans = {
            t: (_time(tasks[t]["started_at"]), _time(tasks[t]["ended_at"]))
            for t in ("lint", "unit")
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise _Fail(f"lint/unit have no usable started_at/ended_at: {exc}") from None
    overlap = min(end for _, end in spans.values()) - max(start for start, _ in spans.values())
    seconds = overlap.total_seconds()
    _expect(seconds > 0, f"lint and unit did not overlap (gap {-seconds:.2f}s)")
    return f"run {run_id}: SUCCESS, lint and unit overlapped for {seconds:.2f}s"


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _step_fail_retry(c: _Checker) -> str:
    run_id = c.started_run(c.orch("run", "examples/plan_fail_retry.yaml", expect=3))
    tasks = c.state(run_id)["tasks"]
    flaky, downstream = tasks.get("flaky", {}), tasks.get("downstream", {})
    _expect(
        flaky.get("status") == "FAILED" and flaky.get("attempts") == 3,
        f"flaky is {flaky.get('status')} after {flaky.get('attempts')} attempts, "
        "expected FAILED after 3",
    )
    reason = downstream.get("skip_reason")
    _expect(
        downstream.get("status") == "SKIPPED" and reason == "dependency_not_success",
        f"downstream is {downstream.get('status')} ({reason}), "
        "expected SKIPPED (dependency_not_success)",
    )
    return f"run {run_id}: flaky FAILED after 3 attempts, downstream SKIPPED ({reason})"


def _step_resume(c: _Checker) -> str:
    run_id = c.needs("basic")
    c.step.run_id = run_id

    def marks(state: Dict[str, Any]) -> Dict[str, Any]:
        return {t: (v.get("attempts"), v.get("started_at")) for t, v in state["tasks"].items()}

    before = marks(c.state(run_id))
    resumed = _run_id(c.orch("resume", run_id, primary=True).stdout)
    _expect(resumed == run_id, f"resume printed run_id {resumed}, expected {run_id}")
    state = c.state(run_id)
    _expect(state.get("status") == "SUCCESS", f"run status {state.get('status')} after resume")
    changed = sorted(t for t, mark in marks(state).items() if before.get(t) != mark)
    _expect(not changed, f"resume ran SUCCESS tasks again: {', '.join(changed)}")
    return f"run {run_id}: SUCCESS, nothing re-run ({len(before)} tasks unchanged)"


def _step_status(c: _Checker) -> str:
    run_id = c.needs("basic")
    c.step.run_id = run_id
    out = c.orch("status", run_id).stdout
    _expect(
        run_id in out and "SUCCESS" in out, "the status table does not show the run id and SUCCESS"
    )
    return f"run {run_id}: status table printed"


def _step_logs(c: _Checker) -> str:
    run_id = c.needs("basic")
    c.step.run_id = run_id
    out = c.orch("logs", run_id, "--task", "inspect", "--tail", "50").stdout
    _expect("inspect" in out and "fake-agent" in out, "no output of task inspect in its logs")
    return f"run {run_id}: {len(out.splitlines())} log lines of task inspect"


def _step_cancel(c: _Checker) -> str:
    argv = c.argv("run", "examples/plan_cancel.yaml")
    # Its own session, so that whatever happens the run and its agents can be ended below.
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=c.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        run_id = _run_id(_first_line(proc))
        c.step.run_id = c.run_ids["cancel"] = run_id
        _wait_running(c, run_id)
        out = c.orch("cancel", run_id).stdout
        _expect("cancel requested" in out, f"orch cancel printed {out.strip()!r}")
        try:
            code: Optional[int] = proc.wait(timeout=_ORCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        _expect(code == 4, f"the canceled run exited {code}, expected 4")
        status = c.state(run_id).get("status")
        _expect(status == "CANCELED", f"run status {status}, expected CANCELED")
        return f"run {run_id}: 'cancel requested' printed, run exited 4, CANCELED"
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        # The run is the command this step is about: list it first, with how it ended.
        c.step.commands.insert(0, {"command": shlex.join(argv), "exit": proc.returncode})
        c.step.primary = 0


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group ended on its own meanwhile (macOS says EPERM for a zombie leader)
    proc.wait()


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + _ORCH_TIMEOUT
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            if line:
                return line
            # End of file: the run is over (or closed its stdout) without a run id.
            code = proc.wait(timeout=_ORCH_TIMEOUT)
            raise _Fail(f"orch run exited {code} before printing its run id")
    raise _Fail("orch run printed no run id")


def _wait_running(c: _Checker, run_id: str) -> None:
    deadline = time.monotonic() + _ORCH_TIMEOUT
    while time.monotonic() < deadline:
        if "RUNNING" in _task_statuses(c.state(run_id)).values():
            return
        time.sleep(0.2)
    raise _Fail("no task of the run reached RUNNING")


def _gate(tool: str, *args: str) -> Callable[[_Checker], str]:
    def step(c: _Checker) -> str:
        argv = [*_tool(tool), *args]
        try:
            proc = subprocess.run(
                argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=c.out, timeout=_GATE_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            c.step.record(argv, None)
            raise _Fail(f"timed out after {_GATE_TIMEOUT:g}s") from None
        except OSError as exc:
            c.step.record(argv, None)
            raise _Fail(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        c.step.record(argv, proc.returncode)
        _expect(proc.returncode == 0, f"exit {proc.returncode}")
        return "clean"

    return step


def _tool(name: str) -> List[str]:
    """The tool on PATH, else the one in the repository's .venv, else `python -m` it."""
    for path in (shutil.which(name), os.path.join(REPO, ".venv", "bin", name)):
        if path and os.access(path, os.X_OK):
            return [path]
    return [sys.executable, "-m", name]


_RUNTIME_STEPS = [
    ("basic", 0, _step_basic),
    ("parallel", 0, _step_parallel),
    ("fail_retry", 3, _step_fail_retry),
    ("resume", 0, _step_resume),
    ("status", 0, _step_status),
    ("logs", 0, _step_logs),
    ("cancel", 4, _step_cancel),
]
_QUALITY_GATES = [
    ("ruff_format", 0, _gate("ruff", "format", "--check", ".")),
    ("ruff_check", 0, _gate("ruff", "check", ".")),
    ("mypy", 0, _gate("mypy")),
    ("pytest", 0, _gate("pytest")),
]


def _run_steps(c: _Checker, steps: List[Any]) -> List[_Step]:
    done: List[_Step] = []
    for number, (name, expected_exit, body) in enumerate(steps, 1):
        c.step = step = _Step(name, expected_exit)
        print(f"[{number}/{len(steps)}] {name}", file=c.out, flush=True)
        started = time.monotonic()
        try:
            step.detail = body(c)
            step.ok = True
        except _Fail as exc:
            step.detail = str(exc)
        step.duration_sec = time.monotonic() - started
        for command in step.commands:
            print(f"    $ {command['command']}  -> exit {command['exit']}", file=c.out)
        verdict = "ok" if step.ok else "FAILED"
        print(f"    {verdict} ({step.duration_sec:.1f}s): {step.detail}", file=c.out, flush=True)
        done.append(step)
    return done


def _default_orch() -> List[str]:
    found = shutil.which("orch")
    return [found] if found else [sys.executable, "-m", "orch"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dod_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--skip-quality-gates",
        action="store_true",
        help="runtime steps only: skip ruff format --check, ruff check, mypy and pytest",
    )
    p.add_argument(
        "--home",
        metavar="DIR",
        help="orch home for the check's runs (default: $ORCH_HOME, else .orch in the repository)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary last on stdout")
    p.add_argument("--json-out", metavar="PATH", help="also write the JSON summary to PATH")
    p.add_argument(
        "--orch",
        metavar="COMMAND",
        help="how to run orch, split like a shell (default: orch on PATH, else python -m orch)",
    )
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    orch = shlex.split(args.orch) if args.orch else _default_orch()
    home = os.path.abspath(args.home or os.environ.get("ORCH_HOME") or os.path.join(REPO, ".orch"))
    out = sys.stderr if args.json else sys.stdout
    print(f"orch DoD check: orch = {shlex.join(orch)}, home = {home}", file=out, flush=True)
    checker = _Checker(orch, home, out)
    started = time.monotonic()
    steps = _RUNTIME_STEPS + ([] if args.skip_quality_gates else _QUALITY_GATES)
    results = _run_steps(checker, steps)
    failed = [s.name for s in results if not s.ok]
    summary = {
        "result": "FAIL" if failed else "PASS",
        "failed_steps": failed,
        "home": home,
        "orch": shlex.join(orch),
        "repo": REPO,
        "quality_gates": "skipped" if args.skip_quality_gates else "run",
        "run_ids": checker.run_ids,
        "duration_sec": round(time.monotonic() - started, 3),
        "steps": [s.as_json() for s in results],
    }
    if failed:
        print(f"DoD FAILED: failing step(s): {', '.join(failed)}", file=out, flush=True)
    else:
        print(f"DoD PASSED: {len(results)} steps ok", file=out, flush=True)
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    if args.json_out:
        _write_atomic(args.json_out, text)
    if args.json:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 1 if failed else 0


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
