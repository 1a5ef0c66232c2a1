#!/usr/bin/env python3
"""Look at orch's live view as a person would: a real terminal (tmux), three widths, a resize,
and a Ctrl-C.

    python3 scripts/look_live_view.py [--out DIR] [--keep]

For each of 40, 80 and 160 columns it starts `orch run` on a plan of fake agents (heartbeat
output, a pool, a retry with backoff, a rate-limited failure whose dependents are skipped, CJK
output) inside a detached tmux session and captures the pane (`tmux capture-pane -p`) at a few
moments. A fourth session starts at 160 columns and is shrunk to 40 while the view is drawn
(no piece of the old status block may stay behind), a fifth is interrupted with Ctrl-C (the
"stopping: ..." line must appear). Captures are written to DIR (default: a new temporary
directory) as <name>_<moment>.txt and printed; a few checks run on them and the script exits 1
if one fails. Needs tmux (`apt-get install -y tmux`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
AGENT = "tools/fake_agent.py"
CJK = "翻訳しています、お待ちください"  # two columns a character: the view must count them so

PLAN = f"""\
goal: "Look at the live view"
pools:
  llm: 1
tasks:
  - id: plan_the_work
    cmd: [python3, {AGENT}, inspect, --sleep, "0.5"]
  - id: write_code_with_a_rather_long_task_name
    cmd: [python3, {AGENT}, build, --sleep, "9", --heartbeat, "0.4",
          --message, "editing orch/progress.py"]
    depends_on: [plan_the_work]
  - id: review_llm
    cmd: [python3, {AGENT}, inspect, --sleep, "5", --heartbeat, "0.5"]
    pool: llm
  - id: summarize_llm
    cmd: [python3, {AGENT}, inspect, --sleep, "3", --heartbeat, "0.5"]
    pool: llm
  - id: translate
    cmd: [sh, -c, 'for i in 1 2 3 4 5 6 7 8; do echo "{CJK} ($i/8)"; sleep 1; done']
  - id: flaky_tests
    cmd: [python3, {AGENT}, test, --fail-always, --message, "3 tests failed"]
    retries: 2
    retry_backoff_sec: 3
  - id: call_the_api
    cmd: [python3, {AGENT}, fix, --rate-limit]
  - id: apply_fix
    cmd: [python3, {AGENT}, fix]
    depends_on: [call_the_api]
  - id: verify_fix
    cmd: [python3, {AGENT}, test]
    depends_on: [apply_fix]
  - id: lint
    cmd: [python3, {AGENT}, inspect, --sleep, "7", --heartbeat, "1"]
  - id: typecheck
    cmd: [python3, {AGENT}, inspect, --sleep, "7", --heartbeat, "1"]
  - id: docs
    cmd: [python3, {AGENT}, build, --sleep, "6", --heartbeat, "1"]
  - id: package
    cmd: [python3, {AGENT}, build, --sleep, "0.3"]
    depends_on: [write_code_with_a_rather_long_task_name, lint, typecheck]
"""

ROWS = 18
MOMENTS = (1.5, 4.0, 7.0)


def tmux(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["tmux", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def capture(session: str, history: bool = False) -> str:
    """The visible pane, or (``history``) the whole scrollback and the pane, wrapped lines
    joined as the terminal holds them (-J)."""
    extra = ("-S", "-", "-J") if history else ()
    return tmux("capture-pane", "-p", *extra, "-t", session)


def start(session: str, columns: int, home: Path, plan: Path, done: Path) -> None:
    tmux("kill-session", "-t", session, check=False)
    # The shell traps SIGINT (its children get the default back): a Ctrl-C sent to the pane
    # must reach orch without ending the session that is being captured.
    command = (
        f"trap true INT; cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m orch run "
        f"{shlex.quote(str(plan))} --home {shlex.quote(str(home))} --max-parallel 6; "
        f"echo exit=$? > {shlex.quote(str(done))}; sleep 600"
    )
    env_unset = "env -u NO_COLOR TERM=xterm-256color"
    tmux(
        "new-session", "-d", "-s", session, "-x", str(columns), "-y", str(ROWS),
        f"{env_unset} sh -c {shlex.quote(command)}",
    )  # fmt: skip


def wait_done(done: Path, timeout: float = 60) -> None:
    give_up = time.monotonic() + timeout
    while not done.exists() and time.monotonic() < give_up:
        time.sleep(0.2)


def session_run(
    name: str,
    columns: int,
    work: Path,
    actions: Dict[float, Tuple[str, ...]],
) -> Dict[str, str]:
    """Run the plan in a tmux session; at each moment do the action (if any) and capture."""
    session = f"orch-look-{name}-{os.getpid()}"
    plan = work / "plan.yaml"
    home = work / f"home-{name}"
    done = work / f"{name}.done"
    start(session, columns, home, plan, done)
    shots: Dict[str, str] = {}
    began = time.monotonic()
    try:
        for moment in sorted(set(MOMENTS) | set(actions)):
            time.sleep(max(0.0, began + moment - time.monotonic()))
            if moment in actions:
                tmux(*actions[moment][:1], "-t", session, *actions[moment][1:])
                time.sleep(0.4)
            shots[f"{moment:g}s"] = capture(session)
        wait_done(done)
        shots["end"] = capture(session)
        shots["history"] = capture(session, history=True)
    finally:
        tmux("kill-session", "-t", session, check=False)
    return shots


def check(name: str, columns: int, shots: Dict[str, str], since: float = 0.0) -> List[str]:
    """Visible lines within ``columns`` (in the shots taken at ``since`` s or later); the run
    ended with its report line; no status-block header left in the scrollback."""
    problems = []
    for moment, text in shots.items():
        if moment == "history" or (moment != "end" and float(moment.rstrip("s")) < since):
            continue
        for line in text.splitlines():
            if len(line) > columns:
                problems.append(f"{name} {moment}: a line is wider than {columns}: {line!r}")
    if name != "ctrl-c" and "report:" not in shots.get("end", ""):
        problems.append(f"{name}: no 'report:' line at the end")
    # A status-block header ("[3/13] 2.1s ...") is never a permanent line: one left in the
    # scrollback is a piece of an old block that was not cleared. Except one drawn before a
    # resize (elapsed time under ``since``): a terminal that rewraps its lines on a narrower
    # window can push the top of a tall block off the screen, where no program can erase it.
    for line in shots.get("history", "").splitlines():
        words = line.split()
        if len(words) > 1 and words[0].startswith("[") and words[1][:1].isdigit():
            elapsed = words[1].rstrip("s")
            if since and elapsed.replace(".", "", 1).isdigit() and float(elapsed) < since:
                print(f"NOTE: {name}: the terminal's rewrap kept a pre-resize line: {line!r}")
                continue
            problems.append(f"{name}: a status line was left in the scrollback: {line!r}")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where to write the captures")
    parser.add_argument("--only", help="run only this session (40, 80, 160, resize, ctrl-c)")
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        print("tmux is missing: apt-get install -y tmux", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="orch-look-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="orch-look-work-"))
    (work / "plan.yaml").write_text(PLAN, encoding="utf-8")
    sessions: List[Tuple[str, int, Dict[float, Tuple[str, ...]]]] = [
        ("40", 40, {}),
        ("80", 80, {}),
        ("160", 160, {}),
        ("resize", 160, {2.5: ("resize-window", "-x", "40")}),
        ("ctrl-c", 80, {3.0: ("send-keys", "C-c")}),
    ]
    problems: List[str] = []
    for name, columns, actions in sessions:
        if args.only and args.only != name:
            continue
        shots = session_run(name, columns, work, actions)
        width = 40 if name == "resize" else columns  # the width after the resize
        for moment, text in shots.items():
            path = out / f"{name}_{moment}.txt"
            path.write_text(text, encoding="utf-8")
            print(f"===== {name} columns, {moment} ({path})")
            print(text.rstrip("\n"))
        since = min(actions) + 0.5 if name == "resize" else 0.0
        problems += check(name, width, shots, since)
        if name == "ctrl-c" and "stopping:" not in "".join(shots.values()):
            problems.append("ctrl-c: no 'stopping:' line after Ctrl-C")
    shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    print(f"captures in {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
