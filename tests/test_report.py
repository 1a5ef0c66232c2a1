"""orch.report: `orch status` and `orch list` rendered from state dicts, and the run facts the
views share. (final_report.md: tests/test_final_report.py, which reuses the states built here.)

The states are built by hand as docs/STATE.md describes them (what orch.store.read_state returns),
with retries, a timeout, a signal death, skipped and canceled tasks, artifacts and awkward ids.
Rendering is pure, so whole texts are compared; timestamps are shown in local time, so every
test here runs with TZ=UTC unless it says otherwise.
"""

from __future__ import annotations

import io
import os
import re
import time
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional

import pytest
from conftest import Orch

from orch import report

RUN_ID = "20261125_090000_a1b2c3"
RUN_DIR = f"/home/u/proj/.orch/runs/{RUN_ID}"
T0 = datetime(2026, 11, 25, 9, 0, 0, tzinfo=timezone.utc)
T0_MS = 1795597200000


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def iso(sec: float) -> str:
    return (T0 + timedelta(seconds=sec)).isoformat()


def attempt(
    n: int,
    start: float,
    duration: Optional[float],
    exit_code: Optional[int] = 0,
    signal: Optional[int] = None,
    timed_out: bool = False,
    canceled: bool = False,
    error: Optional[str] = None,
) -> Dict[str, Any]:
    return {
        "attempt": n,
        "started_at": iso(start),
        "ended_at": iso(start + duration) if duration is not None else None,
        "duration_sec": duration,
        "exit_code": exit_code,
        "signal": signal,
        "timed_out": timed_out,
        "canceled": canceled,
        "error": error,
        "pid": 4000 + n,
        "stdout_offset": 0,
        "stderr_offset": 0,
    }


def task(
    tid: str, status: str, deps: List[str], history: List[Dict[str, Any]], **extra: Any
) -> Dict[str, Any]:
    last = history[-1] if history else {}
    started = history[0]["started_at"] if history else None
    ended = last.get("ended_at")
    duration = None
    if started and ended:
        duration = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    entry = {
        "status": status,
        "depends_on": deps,
        "cmd": ["python3", "tools/fake_agent.py", tid],
        "attempts": len(history),
        "started_at": started,
        "ended_at": ended,
        "duration_sec": duration,
        "exit_code": last.get("exit_code"),
        "signal": last.get("signal"),
        "timed_out": bool(last.get("timed_out")),
        "canceled": bool(last.get("canceled")),
        "skip_reason": None,
        "error": last.get("error"),
        "stdout_path": f"{RUN_DIR}/logs/{tid}.out.log",
        "stderr_path": f"{RUN_DIR}/logs/{tid}.err.log",
        "artifact_paths": [],
        "artifacts": [],
        "missing_outputs": [],
        "artifact_errors": [],
        "history": history,
    }
    entry.update(extra)
    return entry


def run_state(tasks: Dict[str, Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    state = {
        "schema_version": 1,
        "run_id": RUN_ID,
        "status": "FAILED",
        "goal": "Ship the release",
        "created_at": iso(0),
        "updated_at": iso(22),
        "started_at": iso(0),
        "ended_at": iso(22),
        "home": "/home/u/proj/.orch",
        "workdir": "/home/u/proj",
        "run_dir": RUN_DIR,
        "plan_path": "plan.yaml",
        "artifacts_dir": None,
        "max_parallel": 4,
        "fail_fast": False,
        "tasks": tasks,
    }
    state.update(extra)
    return state


def failed_run() -> Dict[str, Any]:
    """A finished run with one of everything."""
    sha = "0123456789abcdef" * 4
    return run_state(
        {
            "inspect": task(
                "inspect",
                "SUCCESS",
                [],
                [attempt(1, 0, 1.25)],
                artifacts=[{"path": "report.json", "size": 2048, "sha256": sha}],
                artifact_paths=[f"{RUN_DIR}/artifacts/inspect/report.json"],
            ),
            # Retried twice; the last attempt timed out and died of the SIGTERM.
            "a.b-c_1": task(
                "a.b-c_1",
                "FAILED",
                ["inspect"],
                [
                    attempt(1, 2, 3.0, exit_code=1),
                    attempt(2, 6, 3.5, exit_code=1),
                    attempt(3, 11, 10.0, exit_code=None, signal=15, timed_out=True),
                ],
                missing_outputs=["dist/**"],
                artifact_errors=["cannot copy 'x|y': Permission denied"],
            ),
            "X": task("X", "FAILED", ["inspect"], [attempt(1, 2, 0.5, exit_code=None, signal=9)]),
            "x.y": task(
                "x.y", "SKIPPED", ["a.b-c_1", "inspect"], [], skip_reason="dependency_not_success"
            ),
            "deploy": task("deploy", "CANCELED", ["x.y"], [], skip_reason="run_canceled"),
            "lint": task(
                "lint",
                "CANCELED",
                [],
                [attempt(1, 2, 20.0, exit_code=None, signal=15, canceled=True)],
            ),
        }
    )


def interrupted_run() -> Dict[str, Any]:
    return run_state(
        {
            "build": task("build", "SUCCESS", [], [attempt(1, 0, 2.0)]),
            "test": task("test", "RUNNING", ["build"], [attempt(1, 2, None, exit_code=None)]),
            "docs": task("docs", "PENDING", ["test"], []),
        },
        status="RUNNING",
        goal=None,
        updated_at=iso(95),
        ended_at=None,
    )


def no_tail(task_id: str, n: int) -> List[str]:
    return []


# --- small formatters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0.0s"),
        (1.25, "1.2s"),
        (59.94, "59.9s"),
        (59.96, "1m00s"),
        (184, "3m04s"),
        (3599.4, "59m59s"),
        (3725, "1h02m"),
        (-3, "0.0s"),
        (float("nan"), "-"),
    ],
)
def test_format_duration(seconds: Optional[float], text: str) -> None:
    assert report.format_duration(seconds) == text


def test_format_timestamp_is_local_without_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    assert report.format_timestamp("2026-11-25T09:00:00.123456+00:00") == (
        "2026-11-25T18:00:00+09:00"
    )
    assert report.format_timestamp(None) == "-"
    assert report.format_timestamp("yesterday") == "yesterday"


# --- effective status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "task_status", "alive", "expected"),
    [
        ("RUNNING", "RUNNING", True, "RUNNING"),
        ("RUNNING", "RUNNING", False, "INTERRUPTED"),
        ("RUNNING", "PENDING", False, "INTERRUPTED"),
        ("PENDING", "RUNNING", False, "INTERRUPTED"),
        ("PENDING", "PENDING", False, "PENDING"),
        ("PENDING", "RUNNING", True, "PENDING"),
        ("FAILED", "FAILED", False, "FAILED"),
        ("SUCCESS", "SUCCESS", False, "SUCCESS"),
        ("CANCELED", "CANCELED", False, "CANCELED"),
    ],
)
def test_effective_status(run: str, task_status: str, alive: bool, expected: str) -> None:
    state = run_state({"a": task("a", task_status, [], [])}, status=run)
    assert report.effective_status(state, alive) == expected


# --- orch status -----------------------------------------------------------------------------


STATUS_FAILED = """\
run:      20261125_090000_a1b2c3
status:   FAILED
goal:     Ship the release
created:  2026-11-25T09:00:00+00:00
started:  2026-11-25T09:00:00+00:00
ended:    2026-11-25T09:00:22+00:00
duration: 22.0s
workdir:  /home/u/proj
tasks:    1/6 ok, 2 failed, 1 skipped, 2 canceled

TASK     STATUS    ATTEMPTS  DURATION  RESULT              NOTE
inspect  SUCCESS          1      1.2s  exit 0
a.b-c_1  FAILED           3     16.5s  timed out, SIGTERM
X        FAILED           1      0.5s  SIGKILL
x.y      SKIPPED          0         -  -                   root failure: a.b-c_1 (dependency_not_success)
deploy   CANCELED         0         -  -                   run_canceled
lint     CANCELED         1     20.0s  SIGTERM             canceled
"""  # noqa: E501


def test_status_of_a_finished_run() -> None:
    # a.b-c_1 ran 3.0 + 3.5 + 10.0 s: its DURATION leaves out the waits between attempts
    # (its first start to its last end is 19.0 s).
    assert report.render_status(failed_run(), False, color=False, width=0) == STATUS_FAILED


def test_status_of_an_interrupted_run() -> None:
    text = report.render_status(interrupted_run(), owner_alive=False, color=False, width=0)
    assert text == (
        "run:      20261125_090000_a1b2c3\n"
        "status:   INTERRUPTED\n"
        "goal:     -\n"
        "created:  2026-11-25T09:00:00+00:00\n"
        "started:  2026-11-25T09:00:00+00:00\n"
        "ended:    -\n"
        "duration: 1m35s until interrupted\n"
        "workdir:  /home/u/proj\n"
        "tasks:    1/3 ok, 1 pending, 1 interrupted\n"
        "\n"
        "TASK   STATUS       ATTEMPTS  DURATION  RESULT  NOTE\n"
        "build  SUCCESS             1      2.0s  exit 0\n"
        "test   INTERRUPTED         1         -  -\n"
        "docs   PENDING             0         -  -\n"
    )


def test_status_of_a_live_run_counts_time_so_far() -> None:
    now = T0 + timedelta(seconds=12)
    text = report.render_status(interrupted_run(), owner_alive=True, color=False, now=now, width=0)
    assert "status:   RUNNING\n" in text
    assert "duration: 12.0s so far\n" in text
    assert "tasks:    1/3 ok, 1 running, 1 pending\n" in text
    # The running task's duration is counted from its start (t=2s) to now.
    assert "test   RUNNING         1     10.0s  -\n" in text


def test_status_colour_only_when_asked() -> None:
    plain = report.render_status(failed_run(), False, color=False, width=0)
    coloured = report.render_status(failed_run(), False, color=True, width=0)
    assert "\x1b" not in plain
    assert "\x1b[31mFAILED\x1b[0m" in coloured
    assert "\x1b[32mSUCCESS\x1b[0m" in coloured
    # Colour codes never shift the columns: without them the text is the plain one.
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


def test_status_note_is_one_line_and_names_the_root_failure() -> None:
    # "after" is skipped behind "mid", itself skipped behind d2: the note names d2, the root,
    # not the direct dependency (which never ran either).
    state = run_state(
        {
            "d0": task("d0", "SUCCESS", [], [attempt(1, 0, 1)]),
            "d1": task("d1", "FAILED", [], [attempt(1, 0, 1, exit_code=2)], allowed_failure=True),
            "d2": task("d2", "FAILED", [], [attempt(1, 0, 1, exit_code=2)]),
            "mid": task("mid", "SKIPPED", ["d0", "d2"], [], skip_reason="dependency_not_success"),
            "after": task(
                "after", "SKIPPED", ["d0", "d1", "mid"], [], skip_reason="dependency_not_success"
            ),
            "cond": task("cond", "SKIPPED", ["d0"], [], skip_reason="condition_not_met"),
            "odd": task(
                "odd",
                "FAILED",
                [],
                [attempt(1, 0, 0.1, exit_code=None, error="cannot\n\x1b[31mstart")],
            ),
        }
    )
    lines = report.render_status(state, False, color=False, width=0).splitlines()
    assert lines[11:17] == [
        "d0     SUCCESS         1      1.0s  exit 0",
        "d1     FAILED          1      1.0s  exit 2  allowed failure",
        "d2     FAILED          1      1.0s  exit 2",
        "mid    SKIPPED         0         -  -       root failure: d2 (dependency_not_success)",
        "after  SKIPPED         0         -  -       root failure: d2 (dependency_not_success)",
        "cond   SKIPPED         0         -  -       condition_not_met",
    ]
    assert lines[-1].split() == ["odd", "FAILED", "1", "0.1s", "-", "cannot", "[31mstart"]


def test_root_failure_walks_long_chains_without_recursion() -> None:
    n = 20_000
    tasks = {"root": task("root", "CANCELED", [], [], skip_reason="run_canceled")}
    for i in range(n):
        dep = "root" if i == 0 else f"s{i - 1}"
        tasks[f"s{i}"] = task(f"s{i}", "SKIPPED", [dep], [], skip_reason="dependency_not_success")
    memo: Dict[str, Optional[str]] = {}
    assert report.root_failure(tasks, f"s{n - 1}", memo) == "root"
    assert len(memo) == n and set(memo.values()) == {"root"}
    # A dependency cycle (a damaged state) ends the walk instead of looping.
    loop = {
        "a": task("a", "SKIPPED", ["b"], [], skip_reason="dependency_not_success"),
        "b": task("b", "SKIPPED", ["a"], [], skip_reason="dependency_not_success"),
    }
    assert report.root_failure(loop, "a", {}) is None


def test_task_run_time_excludes_waits_and_counts_attempts() -> None:
    # Three one-second attempts with waits between them (backoff, queueing): 3.0 s, not the
    # 10.2 s from the first start to the last end.
    entry = task(
        "t",
        "FAILED",
        [],
        [attempt(1, 0, 1.0, 1), attempt(2, 4.1, 1.0, 1), attempt(3, 9.2, 1.0, 1)],
    )
    assert entry["duration_sec"] == pytest.approx(10.2)
    assert report.task_run_time(entry) == (pytest.approx(3.0), 3)
    # A running attempt counts up to now, only when the run is live.
    running = task("r", "RUNNING", [], [attempt(1, 0, 1.0, 1), attempt(2, 5, None, None)])
    now = T0 + timedelta(seconds=7.5)
    assert report.task_run_time(running, live=True, now=now) == (pytest.approx(3.5), 2)
    assert report.task_run_time(running) == (pytest.approx(1.0), 2)


def test_status_fits_the_width_cutting_the_note_then_dropping_columns() -> None:
    state = failed_run()
    for width in (100, 80, 60, 40, 30):
        text = report.render_status(state, False, color=False, width=width)
        assert all(len(line) <= width for line in text.splitlines()), (width, text)
    assert report.render_status(state, False, color=False, width=80).split("\n\n")[1] == (
        "TASK     STATUS    ATTEMPTS  DURATION  RESULT              NOTE\n"
        "inspect  SUCCESS          1      1.2s  exit 0\n"
        "a.b-c_1  FAILED           3     16.5s  timed out, SIGTERM\n"
        "X        FAILED           1      0.5s  SIGKILL\n"
        "x.y      SKIPPED          0         -  -                   root failure: a.b-c_…\n"
        "deploy   CANCELED         0         -  -                   run_canceled\n"
        "lint     CANCELED         1     20.0s  SIGTERM             canceled\n"
    )
    narrow = report.render_status(state, False, color=False, width=60).splitlines()
    assert narrow[10].split() == ["TASK", "STATUS", "RESULT", "NOTE"]
    forty = report.render_status(state, False, color=False, width=40).splitlines()
    assert forty[10].split() == ["TASK", "STATUS", "NOTE"]
    assert forty[8] == "tasks:    1/6 ok, 2 failed, 1 skipped, …"
    # Colour never counts as width.
    coloured = report.render_status(state, False, color=True, width=40)
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == "\n".join(forty) + "\n"


def test_status_width_defaults_to_the_terminal_only_when_stdout_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

        def fileno(self) -> int:
            return 99

    monkeypatch.setattr(report._fmt.os, "get_terminal_size", lambda fd: os.terminal_size((50, 20)))
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(report.sys, "stdout", Tty())
    assert max(map(len, report.render_status(failed_run(), False, False).splitlines())) <= 50
    monkeypatch.setattr(report.sys, "stdout", io.StringIO())  # a pipe: no limit
    assert report.render_status(failed_run(), False, False) == STATUS_FAILED
    monkeypatch.setenv("COLUMNS", "45")  # asked for explicitly, as shutil.get_terminal_size
    assert max(map(len, report.render_status(failed_run(), False, False).splitlines())) <= 45


def test_orch_list_of_a_cjk_goal_fits_the_terminal(orch: Orch) -> None:
    goal = "日本語のゴール: エージェントを順番に動かして結果をまとめる長い説明文" * 2
    plan = orch.plan(f'goal: "{goal}"\ntasks:\n  - id: a\n    cmd: ["true"]\n')
    assert orch.run("run", plan).returncode == 0
    for columns in (60, 100):
        proc = orch.run("list", env={"COLUMNS": str(columns)})
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert max(_columns(line) for line in lines) <= columns, proc.stdout
        assert lines[1].endswith("…") and "日本語のゴール" in lines[1]


# --- orch list -------------------------------------------------------------------------------


def list_runs() -> List[Any]:
    older = failed_run()
    newer = interrupted_run()
    newer["run_id"] = "20261126_080000_ffffff"
    newer["goal"] = "a very long goal " * 10
    done = run_state(
        {"only": task("only", "SUCCESS", [], [attempt(1, 0, 184)])},
        run_id="20261124_070000_000000",
        status="SUCCESS",
        goal="日本語のゴールを達成するための長い説明 | ok",
        ended_at=iso(184),
    )
    return [(newer, False), (older, False), (done, False)]


def test_list_renders_in_the_given_order() -> None:
    text = report.render_list(list_runs(), width=0)
    assert text == (
        "RUN ID                  STATUS       START                DURATION"
        "  TASKS                                    GOAL\n"
        "20261126_080000_ffffff  INTERRUPTED  2026-11-25 09:00:00     1m35s"
        "  1/3 ok, 1 pending, 1 interrupted         "
        "a very long goal a very long goal a very long goal a very l…\n"
        "20261125_090000_a1b2c3  FAILED       2026-11-25 09:00:00     22.0s"
        "  1/6 ok, 2 failed, 1 skipped, 2 canceled  Ship the release\n"
        "20261124_070000_000000  SUCCESS      2026-11-25 09:00:00     3m04s"
        "  1/1 ok                                   日本語のゴールを達成するための長い説明 | ok\n"
    )


def _columns(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


@pytest.mark.parametrize("width", [160, 120, 100, 80, 60, 40])
def test_list_fits_the_terminal_counting_wide_characters(width: int) -> None:
    # A CJK goal once made a 194-column row: every character of it takes two columns.
    lines = report.render_list(list_runs(), width=width).splitlines()
    assert all(_columns(line) <= width for line in lines), lines
    assert [line.split()[0] for line in lines[1:]] == [
        "20261126_080000_ffffff",
        "20261125_090000_a1b2c3",
        "20261124_070000_000000",
    ]


def test_list_cuts_the_goal_first_then_leaves_out_columns() -> None:
    lines = report.render_list(list_runs(), width=120).splitlines()
    assert lines[0].split() == ["RUN", "ID", "STATUS", "DURATION", "TASKS", "GOAL"]
    assert lines[3].endswith("  日本語のゴールを達成するための…")
    assert _columns(lines[3]) == 120 - 1  # a wide character does not fit in the last column
    lines = report.render_list(list_runs(), width=80).splitlines()
    assert lines[0].split() == ["RUN", "ID", "STATUS", "GOAL"]
    assert lines[2] == "20261125_090000_a1b2c3  FAILED       Ship the release"
    assert (
        report.render_list(list_runs(), width=40).splitlines()[0]
        == "RUN ID                  STATUS"
    )


def test_list_of_nothing() -> None:
    assert report.render_list([]) == "no runs\n"


def test_list_entry_json() -> None:
    assert report.list_entry_json(interrupted_run(), False) == {
        "run_id": RUN_ID,
        # As in state.json and status --json: `status` is stored, `effective_status` seen.
        "status": "RUNNING",
        "effective_status": "INTERRUPTED",
        "goal": None,
        "created_at": iso(0),
        "started_at": iso(0),
        "ended_at": None,
        "duration_sec": 95.0,
        "tasks": 3,
        # Counts are the stored statuses: scripts see what state.json says.
        "counts": {
            "SUCCESS": 1,
            "FAILED": 0,
            "SKIPPED": 0,
            "CANCELED": 0,
            "RUNNING": 1,
            "PENDING": 1,
        },
        "metrics": {},
        "sessions": 0,
    }
    live = report.list_entry_json(interrupted_run(), True, now=T0 + timedelta(seconds=3.5))
    assert live["status"] == live["effective_status"] == "RUNNING"
    assert live["duration_sec"] == 3.5


def awkward_run() -> Dict[str, Any]:
    ids = ["end", "X", "x.y", "a.b-c_1", "1st", 'we"ird #id: x;y`z<b>&']
    tasks = {}
    for i, tid in enumerate(ids):
        deps = ids[max(0, i - 2) : i]
        tasks[tid] = task(tid, "SUCCESS", deps, [attempt(1, i, 1.5), attempt(2, i + 2, 0.25)])
    tasks["x.y"]["status"] = "FAILED"
    tasks["x.y"]["history"][1].update(exit_code=None, signal=9)
    tasks["end"]["history"][0].update(exit_code=3)
    return run_state(tasks)


# --- a large run -----------------------------------------------------------------------------


def large_run(n: int = 10_000) -> Dict[str, Any]:
    tasks = {}
    for i in range(n):
        deps = [f"t{i - 1}"] if i else []
        if i >= 10:
            deps.append(f"t{i - 10}")
        status = "FAILED" if i % 97 == 0 else "SUCCESS"
        tasks[f"t{i}"] = task(
            f"t{i}", status, deps, [attempt(1, i, 1.0, exit_code=int(i % 97 == 0))]
        )
    return run_state(tasks)


def test_large_status_renders_linearly() -> None:
    state = large_run()
    start = time.perf_counter()
    status = report.render_status(state, False, color=True, width=100)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0  # a sanity bound only; the real budget is checked in bench/
    assert len(status.splitlines()) == 9 + 1 + 1 + 10_000
    assert "tasks:    9896/10000 ok, 104 failed\n" in status


def test_colour_follows_no_color_org_everywhere() -> None:
    """One rule for status, list and the live view: only a non-empty NO_COLOR turns colour
    off (an empty `NO_COLOR=` once did in `status` but not in the live view)."""
    from orch import _fmt

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert _fmt.color_wanted(Tty(), {}) is True
    assert _fmt.color_wanted(Tty(), {"NO_COLOR": ""}) is True
    assert _fmt.color_wanted(Tty(), {"NO_COLOR": "1"}) is False
    assert _fmt.color_wanted(Tty(), {"TERM": "dumb"}) is False
    assert _fmt.color_wanted(io.StringIO(), {}) is False  # not a terminal
