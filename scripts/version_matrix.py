#!/usr/bin/env python3
"""Run a runtime smoke of the orch zipapp under every CPython 3.8-3.13 on this machine.

    python3 scripts/version_matrix.py [--pyz PATH] [--python EXE]... [--require-all]

Interpreters are looked up as $PYENV_ROOT/versions/3.X.Y/bin/python (newest patch first),
then python3.X on PATH; a minor version with neither is reported as "SKIP 3.X: not found".
Per interpreter, from a scratch directory outside the checkout with PYTHON* variables unset:
every orch module imported from the zipapp, `--version`, `validate`, a run with a dependency,
a retry, a failure (exit 3) and an output artifact, `status --json`, `logs --tail`,
`resume --failed-only`, `list --json`, `graph`, and a cancel of a live run (exit 4). Any
interpreter that is present and fails makes the exit status 1 (so does any SKIP with
--require-all). The zipapp is built first (scripts/build_zipapp.py) unless --pyz names one.
Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["main"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINORS = range(8, 14)
_CMD_TIMEOUT = 60.0


class _Fail(Exception):
    """A smoke step went wrong; the message says which and why."""


class _Smoke:
    """One interpreter's smoke: runs orch from the zipapp in a private scratch directory."""

    def __init__(self, python: str, pyz: str, workdir: str) -> None:
        self.python = python
        self.pyz = pyz
        self.workdir = workdir
        self.home = os.path.join(workdir, "home")
        self.checks = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ORCH_"))}
        self.env["NO_COLOR"] = "1"

    def orch(self, step: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        argv = [self.python, self.pyz, *args]
        try:
            proc = subprocess.run(
                argv,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_CMD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise _Fail(f"{step}: timed out after {_CMD_TIMEOUT:g}s: {_show(argv)}") from None
        if proc.returncode != expect:
            raise _Fail(
                f"{step}: expected exit {expect}, got {proc.returncode}: {_show(argv)}\n"
                f"{_excerpt(proc.stdout, proc.stderr)}"
            )
        self.checks += 1
        return proc

    def state(self, step: str, run_id: str) -> Dict[str, Any]:
        proc = self.orch(step, "status", run_id, "--json", "--home", self.home)
        try:
            data = json.loads(proc.stdout)
        except ValueError as exc:
            raise _Fail(f"{step}: status --json is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
            raise _Fail(f"{step}: status --json has no tasks object")
        return data

    def write_plan(self, name: str, text: str) -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return name


def _show(argv: List[str]) -> str:
    return " ".join(argv)


def _excerpt(stdout: str, stderr: str, lines: int = 15) -> str:
    text = (stdout + stderr).strip().splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def _expect(step: str, ok: bool, what: str) -> None:
    if not ok:
        raise _Fail(f"{step}: {what}")


def _code(source: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(source)


def _smoke_plan(python: str) -> str:
    py = _code(python)
    produce = (
        "import os; os.makedirs('out', exist_ok=True);"
        " open('out/result.txt', 'w').write('matrix-ok\\n')"
    )
    consume = (
        "import json, os; ctx = json.load(open(os.environ['ORCH_CONTEXT']));"
        " paths = ctx['dependencies']['produce']['artifact_paths'];"
        " print('consumed', open(paths[0]).read().strip())"
    )
    flaky = "import os, sys; sys.exit(0 if os.environ['ORCH_ATTEMPT'] == '2' else 1)"
    broken = "import sys; sys.stderr.write('broken on purpose\\n'); sys.exit(7)"
    return f"""\
goal: "version matrix smoke"
tasks:
  - id: produce
    cmd: [{py}, "-c", {_code(produce)}]
    outputs: ["out/*.txt"]
  - id: consume
    cmd: [{py}, "-c", {_code(consume)}]
    depends_on: [produce]
  - id: flaky
    cmd: [{py}, "-c", {_code(flaky)}]
    retries: 1
    retry_backoff_sec: 0
  - id: broken
    cmd: [{py}, "-c", {_code(broken)}]
  - id: after_broken
    cmd: [{py}, "-c", "print('never')"]
    depends_on: [broken]
"""


def _cancel_plan(python: str) -> str:
    py = _code(python)
    return f"""\
goal: "version matrix cancel"
tasks:
  - id: sleeper
    cmd: [{py}, "-c", "import time; time.sleep(60)"]
  - id: after
    cmd: [{py}, "-c", "print('never')"]
    depends_on: [sleeper]
"""


def _run_id(step: str, stdout: str) -> str:
    first = stdout.splitlines()[0] if stdout else ""
    _expect(
        step, first.startswith("run_id: "), f"first stdout line is not 'run_id: ...': {first!r}"
    )
    return first[len("run_id: ") :].strip()


def _check_imports(s: _Smoke) -> None:
    with zipfile.ZipFile(s.pyz) as zf:
        modules = sorted(
            n[:-3].replace("/", ".").replace(".__init__", "")
            for n in zf.namelist()
            if n.startswith("orch/") and n.endswith(".py") and not n.endswith("__main__.py")
        )
    code = (
        "import importlib, os, sys; sys.path.insert(0, sys.argv[1])\n"
        "for name in sys.argv[2:]:\n"
        "    mod = importlib.import_module(name)\n"
        "    assert mod.__file__.startswith(sys.argv[1] + os.sep), (name, mod.__file__)\n"
        "print(len(sys.argv) - 2)\n"
    )
    # -I: no PYTHONPATH, no user site, no current directory: only the archive provides orch.
    argv = [s.python, "-I", "-c", code, s.pyz, *modules]
    proc = subprocess.run(
        argv, cwd=s.workdir, env=s.env, capture_output=True, text=True, timeout=_CMD_TIMEOUT
    )
    if proc.returncode != 0 or proc.stdout.strip() != str(len(modules)):
        raise _Fail(f"import: importing {len(modules)} modules failed\n{_excerpt('', proc.stderr)}")
    s.checks += 1


def _check_basics(s: _Smoke) -> None:
    out = s.orch("--version", "--version").stdout
    _expect("--version", out.startswith("orch "), f"unexpected output {out.strip()!r}")
    plan = s.write_plan("smoke.yaml", _smoke_plan(s.python))
    out = s.orch("validate", "validate", plan).stdout
    _expect("validate", "plan OK: 5 tasks" in out, f"unexpected output {out.strip()!r}")


def _check_run(s: _Smoke) -> str:
    proc = s.orch("run", "run", "smoke.yaml", "--home", s.home, "--max-parallel", "2", expect=3)
    run_id = _run_id("run", proc.stdout)
    state = s.state("status --json", run_id)
    tasks = state["tasks"]
    want = {
        "produce": "SUCCESS",
        "consume": "SUCCESS",
        "flaky": "SUCCESS",
        "broken": "FAILED",
        "after_broken": "SKIPPED",
    }
    got = {tid: tasks.get(tid, {}).get("status") for tid in want}
    _expect("status --json", got == want, f"task statuses {got}, expected {want}")
    _expect("status --json", state.get("status") == "FAILED", f"run status {state.get('status')}")
    _expect("retry", tasks["flaky"].get("attempts") == 2, "flaky did not take 2 attempts")
    _expect("failure", tasks["broken"].get("exit_code") == 7, "broken's exit_code is not 7")
    reason = tasks["after_broken"].get("skip_reason")
    _expect("skip", reason == "dependency_not_success", f"after_broken skip_reason {reason!r}")
    _check_artifact(tasks["produce"].get("artifact_paths") or [])
    report = os.path.join(s.home, "runs", run_id, "report", "final_report.md")
    _expect("report", os.path.isfile(report), f"no final report at {report}")
    return run_id


def _check_artifact(paths: List[str]) -> None:
    _expect("artifact", len(paths) == 1, f"produce collected {paths}, expected one file")
    with open(paths[0], encoding="utf-8") as f:
        content = f.read()
    _expect("artifact", content == "matrix-ok\n", f"artifact holds {content!r}")


def _check_logs(s: _Smoke, run_id: str) -> None:
    args = ("logs", run_id, "--home", s.home, "--tail")
    out = s.orch("logs --tail", *args, "5", "--task", "broken").stdout
    _expect("logs --tail", "broken on purpose" in out, "broken's stderr not in its logs")
    out = s.orch("logs --tail", *args, "1", "--task", "consume", "--stream", "stdout").stdout
    _expect("logs --tail", "consumed matrix-ok" in out.splitlines(), f"consume's last line {out!r}")


def _check_more(s: _Smoke, run_id: str) -> None:
    """resume --failed-only, list --json and graph: more code paths to meet each version."""
    proc = s.orch("resume", "resume", run_id, "--failed-only", "--home", s.home, expect=3)
    _expect("resume", _run_id("resume", proc.stdout) == run_id, "resume printed another run id")
    tasks = s.state("resume", run_id)["tasks"]
    attempts = {tid: tasks[tid].get("attempts") for tid in ("produce", "flaky", "broken")}
    want = {"produce": 1, "flaky": 2, "broken": 2}
    _expect("resume", attempts == want, f"attempts {attempts} after resume, expected {want}")
    rows = json.loads(s.orch("list --json", "list", "--json", "--home", s.home).stdout)
    _expect("list --json", isinstance(rows, list) and len(rows) == 1, f"list gave {rows!r}")
    out = s.orch("graph", "graph", run_id, "--format", "dot", "--home", s.home).stdout
    _expect("graph", "digraph" in out and "after_broken" in out, "graph printed no DOT digraph")


def _check_cancel(s: _Smoke) -> None:
    plan = s.write_plan("cancel.yaml", _cancel_plan(s.python))
    argv = [s.python, s.pyz, "run", plan, "--home", s.home]
    # Its own session, so that a failed check can still end the run and everything under it.
    proc = subprocess.Popen(
        argv,
        cwd=s.workdir,
        env=s.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        run_id = _run_id("cancel", _first_line(proc, time.monotonic() + _CMD_TIMEOUT))
        _wait_running(s, run_id, "sleeper")
        out = s.orch("cancel", "cancel", run_id, "--home", s.home).stdout
        _expect("cancel", f"cancel requested: {run_id}" in out, f"cancel printed {out!r}")
        try:
            code = proc.wait(timeout=_CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise _Fail("cancel: the run did not end within 60s of the cancel") from None
        _expect("cancel", code == 4, f"canceled run exited {code}, expected 4")
        status = s.state("cancel", run_id).get("status")
        _expect("cancel", status == "CANCELED", f"run status {status}, expected CANCELED")
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group ended on its own meanwhile (macOS says EPERM for a zombie leader)
    proc.wait()


def _first_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line:
                return line
            # End of file: the run is over (or closed its stdout) without a run id.
            raise _Fail(f"cancel: the run exited {proc.wait(_CMD_TIMEOUT)} before its run_id line")
    raise _Fail("cancel: the run printed no run_id line")


def _wait_running(s: _Smoke, run_id: str, task_id: str) -> None:
    deadline = time.monotonic() + _CMD_TIMEOUT
    while time.monotonic() < deadline:
        if s.state("cancel", run_id)["tasks"].get(task_id, {}).get("status") == "RUNNING":
            return
        time.sleep(0.2)
    raise _Fail(f"cancel: task {task_id} never reached RUNNING")


def smoke(python: str, pyz: str) -> int:
    """Run every check under ``python``; return the number of checks passed or raise _Fail."""
    workdir = tempfile.mkdtemp(prefix="orch-matrix-")
    try:
        s = _Smoke(python, pyz, workdir)
        _check_imports(s)
        _check_basics(s)
        run_id = _check_run(s)
        _check_logs(s, run_id)
        _check_more(s, run_id)
        _check_cancel(s)
        return s.checks
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _probe(exe: str) -> Optional[str]:
    """The interpreter's full version, or None if it does not run."""
    try:
        proc = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _candidates(minor: int) -> List[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found: List[Tuple[int, str]] = []
    for path in glob.glob(os.path.join(root, "versions", f"3.{minor}.*", "bin", "python")):
        match = re.fullmatch(
            rf"3\.{minor}\.(\d+)", os.path.basename(os.path.dirname(os.path.dirname(path)))
        )
        if match:
            found.append((int(match.group(1)), path))
    paths = [path for _, path in sorted(found, reverse=True)]
    on_path = shutil.which(f"python3.{minor}")
    return [*paths, on_path] if on_path else paths


def _find(minor: int) -> Optional[Tuple[str, str]]:
    for exe in _candidates(minor):
        version = _probe(exe)
        if version and version.startswith(f"3.{minor}."):
            return exe, version
    return None


def _explicit(pythons: List[str]) -> List[Tuple[str, Optional[Tuple[str, str]]]]:
    rows: List[Tuple[str, Optional[Tuple[str, str]]]] = []
    for exe in pythons:
        version = _probe(exe)
        label = ".".join(version.split(".")[:2]) if version else exe
        rows.append((label, (exe, version) if version else None))
    return rows


def _build(pyz: Optional[str]) -> str:
    if pyz:
        if not os.path.isfile(pyz):
            raise SystemExit(f"version_matrix: no such zipapp: {pyz}")
        return os.path.abspath(pyz)
    out = os.path.join(REPO, "dist", "orch.pyz")
    subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "build_zipapp.py"), "-o", out], check=True
    )
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="version_matrix.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pyz", metavar="PATH", help="zipapp to test (default: build dist/orch.pyz)"
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="EXE",
        help="test this interpreter instead of searching (repeatable)",
    )
    parser.add_argument(
        "--require-all", action="store_true", help="a missing 3.8-3.13 is a failure"
    )
    args = parser.parse_args(argv)
    pyz = _build(args.pyz)
    rows = _explicit(args.python) if args.python else [(f"3.{m}", _find(m)) for m in MINORS]
    passed: List[str] = []
    skipped: List[str] = []
    failed: List[str] = []
    started = time.monotonic()
    for label, found in rows:
        if found is None and args.python:
            print(f"FAIL {label}: does not run", flush=True)
            failed.append(label)
            continue
        if found is None:
            print(f"SKIP {label}: not found", flush=True)
            skipped.append(label)
            continue
        exe, version = found
        t0 = time.monotonic()
        try:
            checks = smoke(exe, pyz)
        except _Fail as exc:
            print(f"FAIL {label} ({version}, {exe}): {exc}", flush=True)
            failed.append(label)
            continue
        print(
            f"PASS {label} ({version}, {exe}): {checks} checks in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        passed.append(label)
    print(
        f"version matrix: {len(passed)} passed ({' '.join(passed) or '-'}), "
        f"{len(skipped)} skipped ({' '.join(skipped) or '-'}), "
        f"{len(failed)} failed ({' '.join(failed) or '-'}) in {time.monotonic() - started:.1f}s"
    )
    if failed or not passed or (args.require_all and skipped):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
