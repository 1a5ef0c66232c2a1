"""orch.report: `orch status`, `orch list` and final_report.md rendered from state dicts.

The states are built by hand as docs/STATE.md describes them (what orch.store.read_state returns),
with retries, a timeout, a signal death, skipped and canceled tasks, artifacts and awkward ids.
Rendering is pure, so whole texts are compared; timestamps are shown in local time, so every
test here runs with TZ=UTC unless it says otherwise.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional

import pytest

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
a.b-c_1  FAILED           3     19.0s  timed out, SIGTERM
X        FAILED           1      0.5s  SIGKILL
x.y      SKIPPED          0         -  -                   dependency_not_success: a.b-c_1
deploy   CANCELED         0         -  -                   run_canceled
lint     CANCELED         1     20.0s  SIGTERM             canceled
"""


def test_status_of_a_finished_run() -> None:
    assert report.render_status(failed_run(), False, color=False) == STATUS_FAILED


def test_status_of_an_interrupted_run() -> None:
    text = report.render_status(interrupted_run(), owner_alive=False, color=False)
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
    text = report.render_status(interrupted_run(), owner_alive=True, color=False, now=now)
    assert "status:   RUNNING\n" in text
    assert "duration: 12.0s so far\n" in text
    assert "tasks:    1/3 ok, 1 running, 1 pending\n" in text
    # The running task's duration is counted from its start (t=2s) to now.
    assert "test   RUNNING         1     10.0s  -\n" in text


def test_status_colour_only_when_asked() -> None:
    plain = report.render_status(failed_run(), False, color=False)
    coloured = report.render_status(failed_run(), False, color=True)
    assert "\x1b" not in plain
    assert "\x1b[31mFAILED\x1b[0m" in coloured
    assert "\x1b[32mSUCCESS\x1b[0m" in coloured
    # Colour codes never shift the columns: without them the text is the plain one.
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain


def test_status_note_is_one_line_and_lists_blocking_dependencies() -> None:
    state = run_state(
        {
            **{
                f"d{i}": task(f"d{i}", "FAILED", [], [attempt(1, 0, 1, exit_code=2)])
                for i in range(5)
            },
            "after": task(
                "after",
                "SKIPPED",
                [f"d{i}" for i in range(5)],
                [],
                skip_reason="dependency_not_success",
            ),
            "odd": task(
                "odd",
                "FAILED",
                [],
                [attempt(1, 0, 0.1, exit_code=None, error="cannot\n\x1b[31mstart")],
            ),
        }
    )
    lines = report.render_status(state, False, color=False).splitlines()
    assert lines[-2].endswith("dependency_not_success: d0, d1, d2, …")
    assert lines[-1].split() == ["odd", "FAILED", "1", "0.1s", "-", "cannot", "[31mstart"]


# --- orch list -------------------------------------------------------------------------------


def test_list_renders_in_the_given_order() -> None:
    older = failed_run()
    newer = interrupted_run()
    newer["run_id"] = "20261126_080000_ffffff"
    newer["goal"] = "a very long goal " * 10
    done = run_state(
        {"only": task("only", "SUCCESS", [], [attempt(1, 0, 184)])},
        run_id="20261124_070000_000000",
        status="SUCCESS",
        goal="日本語のゴール | ok",
        ended_at=iso(184),
    )
    text = report.render_list([(newer, False), (older, False), (done, False)])
    assert text == (
        "RUN ID                  STATUS       START                DURATION"
        "  TASKS                                    GOAL\n"
        "20261126_080000_ffffff  INTERRUPTED  2026-11-25 09:00:00     1m35s"
        "  1/3 ok, 1 pending, 1 interrupted         "
        "a very long goal a very long goal a very long goal a very l…\n"
        "20261125_090000_a1b2c3  FAILED       2026-11-25 09:00:00     22.0s"
        "  1/6 ok, 2 failed, 1 skipped, 2 canceled  Ship the release\n"
        "20261124_070000_000000  SUCCESS      2026-11-25 09:00:00     3m04s"
        "  1/1 ok                                   日本語のゴール | ok\n"
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
    }
    live = report.list_entry_json(interrupted_run(), True, now=T0 + timedelta(seconds=3.5))
    assert live["status"] == live["effective_status"] == "RUNNING"
    assert live["duration_sec"] == 3.5


# --- final_report.md -------------------------------------------------------------------------


def stderr_of(task_id: str, n: int) -> List[str]:
    assert n == 50
    return [
        f"=== orch: task {task_id} attempt 1 started ===\n",
        "Traceback (most recent call last):\n",
        "ValueError: boom\n",
    ]


REPORT_FAILED = """\
# Run `20261125_090000_a1b2c3`

- **Goal:** Ship the release
- **Status:** **FAILED**
- **Tasks:** 1/6 ok, 2 failed, 1 skipped, 2 canceled
- **Created:** 2026-11-25T09:00:00+00:00
- **Started:** 2026-11-25T09:00:00+00:00
- **Ended:** 2026-11-25T09:00:22+00:00
- **Wall time:** 22.0s
- **Max parallel:** 4
- **Fail fast:** no
- **Workdir:** `/home/u/proj`
- **Plan:** `plan.yaml`
- **Run directory:** `/home/u/proj/.orch/runs/20261125_090000_a1b2c3`

## Tasks

| Task | Status | Attempts | Duration | Exit code | Timed out | Logs |
| --- | --- | ---: | ---: | ---: | --- | --- |
| `inspect` | SUCCESS | 1 | 1.2s | 0 | no | `logs/inspect.out.log`<br>`logs/inspect.err.log` |
| `a.b-c_1` | FAILED | 3 | 19.0s | SIGTERM | yes | `logs/a.b-c_1.out.log`<br>`logs/a.b-c_1.err.log` |
| `X` | FAILED | 1 | 0.5s | SIGKILL | no | `logs/X.out.log`<br>`logs/X.err.log` |
| `x.y` | SKIPPED | 0 | - | - | no | - |
| `deploy` | CANCELED | 0 | - | - | no | - |
| `lint` | CANCELED | 1 | 20.0s | SIGTERM | no | `logs/lint.out.log`<br>`logs/lint.err.log` |

## Failures

### `a.b-c_1`

- **Result:** timed out, SIGTERM
- **Attempts:** 3
- **Command:** `python3 tools/fake_agent.py a.b-c_1`

| Attempt | Started | Duration | Result | Error |
| ---: | --- | ---: | --- | --- |
| 1 | 2026-11-25T09:00:02+00:00 | 3.0s | exit 1 | - |
| 2 | 2026-11-25T09:00:06+00:00 | 3.5s | exit 1 | - |
| 3 | 2026-11-25T09:00:11+00:00 | 10.0s | timed out, SIGTERM | - |

Last 3 lines of stderr (`logs/a.b-c_1.err.log`):

```text
=== orch: task a.b-c_1 attempt 1 started ===
Traceback (most recent call last):
ValueError: boom
```

### `X`

- **Result:** SIGKILL
- **Attempts:** 1
- **Command:** `python3 tools/fake_agent.py X`

Last 3 lines of stderr (`logs/X.err.log`):

```text
=== orch: task X attempt 1 started ===
Traceback (most recent call last):
ValueError: boom
```

## Skipped and canceled

| Task | Status | Reason | Blocked by |
| --- | --- | --- | --- |
| `x.y` | SKIPPED | `dependency_not_success` | `a.b-c_1` |
| `deploy` | CANCELED | `run_canceled` | - |
| `lint` | CANCELED | canceled | - |

## Artifacts

### `inspect`

| Path | Size | SHA-256 |
| --- | ---: | --- |
| `report.json` | 2.0 KiB | `0123456789ab` |

### `a.b-c_1`

Missing outputs (no match): `dist/**`

Artifact errors:

- cannot copy 'x\\|y': Permission denied

## Graph

```mermaid
flowchart LR
    t0["inspect<br/>SUCCESS"]:::success
    t1["a.b-c_1<br/>FAILED"]:::failed
    t2["X<br/>FAILED"]:::failed
    t3["x.y<br/>SKIPPED"]:::skipped
    t4["deploy<br/>CANCELED"]:::canceled
    t5["lint<br/>CANCELED"]:::canceled
    t0 --> t1
    t0 --> t2
    t1 --> t3
    t0 --> t3
    t3 --> t4
    classDef success fill:#d4edda,stroke:#28a745,color:#155724
    classDef failed fill:#f8d7da,stroke:#dc3545,color:#721c24
    classDef skipped fill:#e2e3e5,stroke:#6c757d,color:#383d41
    classDef canceled fill:#ffe5cc,stroke:#fd7e14,color:#7a3e00
```

## Timeline

One bar per attempt: failed ones are marked critical, running ones active.

```mermaid
gantt
    dateFormat x
    axisFormat %H:%M:%S
    todayMarker off
    section inspect
    attempt 1 :done, a0, 1795597200000, 1795597201250
    section a.b-c_1
    attempt 1 :crit, a1, 1795597202000, 1795597205000
    attempt 2 :crit, a2, 1795597206000, 1795597209500
    attempt 3 :crit, a3, 1795597211000, 1795597221000
    section X
    attempt 1 :crit, a4, 1795597202000, 1795597202500
    section lint
    attempt 1 :a5, 1795597202000, 1795597222000
```
"""  # noqa: E501


def test_final_report_of_a_small_run() -> None:
    # The colours come from orch.graph so that `orch graph RUN_ID` and the report agree.
    assert report.render_final_report(failed_run(), stderr_of) == REPORT_FAILED


def test_report_asks_for_the_stderr_tail_of_each_failed_task_only() -> None:
    calls = []

    def tail(task_id: str, n: int) -> List[str]:
        calls.append((task_id, n))
        return [f"last words of {task_id}"]

    text = report.render_final_report(failed_run(), tail)
    assert calls == [("a.b-c_1", 50), ("X", 50)]
    assert "Last 1 line of stderr (`logs/X.err.log`):\n\n```text\nlast words of X\n```\n" in text


def test_report_stderr_fence_outgrows_backticks_in_the_log() -> None:
    lines = ["```", "a ```` b", "````` five"]
    text = report.render_final_report(failed_run(), lambda t, n: lines)
    block = "``````text\n```\na ```` b\n````` five\n``````\n"
    assert text.count(block) == 2


def test_report_when_stderr_is_empty_or_unreadable() -> None:
    assert "Stderr (`logs/X.err.log`) is empty." in report.render_final_report(
        failed_run(), no_tail
    )

    def broken(task_id: str, n: int) -> List[str]:
        raise FileNotFoundError(2, "No such file or directory")

    text = report.render_final_report(failed_run(), broken)
    assert "Stderr (`logs/X.err.log`) could not be read: No such file or directory" in text


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_report_table_cells_escape_pipes_and_newlines() -> None:
    state = failed_run()
    state["goal"] = "build | test\nthen *ship* <b>"
    inspect = state["tasks"]["inspect"]
    inspect["artifacts"].append({"path": "odd|name`x`.txt", "size": 5, "sha256": "ff" * 32})
    state["tasks"]["deploy"]["error"] = "first | line\nsecond line"
    state["tasks"]["a.b-c_1"]["history"][0]["error"] = "cannot start 'a|b':\nNo such file"
    text = report.render_final_report(state, no_tail)

    assert "- **Goal:** build \\| test<br>then \\*ship\\* \\<b\\>\n" in text
    assert "| ``odd\\|name`x`.txt`` | 5 B | `ffffffffffff` |\n" in text
    assert "| `run_canceled`; first \\| line second line |" in text
    assert (
        "| 1 | 2026-11-25T09:00:02+00:00 | 3.0s | exit 1 | cannot start 'a\\|b': No such file |"
        in text
    )
    # Every table row has exactly as many cell borders as its header row.
    borders = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            borders = 0
            continue
        if borders == 0:
            borders = _unescaped_pipes(line)
        assert _unescaped_pipes(line) == borders, line


def test_report_of_a_successful_run_has_no_failure_sections() -> None:
    state = run_state(
        {"only": task("only", "SUCCESS", [], [attempt(1, 0, 1)])}, status="SUCCESS", goal=None
    )
    text = report.render_final_report(state, stderr_of)
    assert "## Failures" not in text
    assert "## Skipped and canceled" not in text
    assert "## Artifacts\n\nNo task declared outputs that produced artifacts.\n" in text
    assert "- **Goal:** -\n" in text


def test_report_when_no_attempt_started() -> None:
    state = run_state(
        {"a": task("a", "CANCELED", [], [], skip_reason="run_canceled")}, status="CANCELED"
    )
    text = report.render_final_report(state, no_tail)
    assert "## Timeline\n\nNo attempt was started.\n" in text


# --- Mermaid, checked for shape (tests/test_report_mermaid.py runs the real parser) ------------

FLOW_LINE = re.compile(
    r'    (?P<node>t\d+)\["(?P<label>[^"]*)"\](:::(?P<css>[a-z]+))?'
    r"|    t\d+ --> t\d+"
    r"|    classDef [a-z]+ fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6},color:#[0-9a-f]{6}"
)
GANTT_LINE = re.compile(
    r"    section [A-Za-z0-9._\- ]+"
    r"|    attempt \d+ :(?:(?:done|crit|active), )?a\d+, (?P<start>\d{13}), (?P<end>\d{13})"
)
GANTT_HEAD = ["gantt", "    dateFormat x", "    axisFormat %H:%M:%S", "    todayMarker off"]


def _decode_label(label: str) -> str:
    named = {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}
    return re.sub(r"#(\w+);", lambda m: named.get(m.group(1)) or chr(int(m.group(1))), label)


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


def test_flowchart_is_well_formed_with_awkward_ids() -> None:
    state = awkward_run()
    lines = report.mermaid_flowchart(state).splitlines()
    assert lines[0] == "flowchart LR"
    labels = {}
    classes = {}
    for line in lines[1:]:
        match = FLOW_LINE.fullmatch(line)
        assert match, line
        if match.group("node"):
            labels[match.group("node")] = _decode_label(match.group("label"))
            classes[match.group("node")] = match.group("css")
    assert labels == {
        f"t{i}": f"{tid}<br/>{t['status']}" for i, (tid, t) in enumerate(state["tasks"].items())
    }
    assert "    t2 --> t3" in lines
    assert classes == {
        "t0": "success",
        "t1": "success",
        "t2": "failed",
        "t3": "success",
        "t4": "success",
        "t5": "success",
    }


def test_gantt_is_well_formed_with_awkward_ids() -> None:
    lines = report.mermaid_gantt(awkward_run()).splitlines()
    assert lines[:4] == GANTT_HEAD
    sections = [line[len("    section ") :] for line in lines if "section" in line]
    assert sections == ["end", "X", "x.y", "a.b-c_1", "1st", "we_ird _id_ x_y_z_b__"]
    bars = [GANTT_LINE.fullmatch(line) for line in lines[4:]]
    assert all(bars), lines
    spans = [(int(m.group("start")), int(m.group("end"))) for m in bars if m and m.group("start")]
    assert len(spans) == 12
    assert spans[0] == (T0_MS, T0_MS + 1500)
    assert all(start <= end for start, end in spans)
    # A failed attempt is crit even when the task succeeded later; a success is done.
    assert lines[5] == f"    attempt 1 :crit, a0, {T0_MS}, {T0_MS + 1500}"
    assert lines[6] == f"    attempt 2 :done, a1, {T0_MS + 2000}, {T0_MS + 2250}"
    assert "    attempt 2 :crit, a5, " in "\n".join(lines)


def test_gantt_shows_a_running_attempt_as_active_up_to_the_last_update() -> None:
    lines = report.mermaid_gantt(interrupted_run()).splitlines()
    assert lines[-2:] == [
        "    section test",
        f"    attempt 1 :active, a1, {T0_MS + 2000}, {T0_MS + 95000}",
    ]


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


def test_large_run_renders_linearly_and_leaves_out_what_mermaid_cannot_draw() -> None:
    state = large_run()
    start = time.perf_counter()
    status = report.render_status(state, False, color=True)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0  # a sanity bound only; the real budget is checked in bench/
    assert len(status.splitlines()) == 9 + 1 + 1 + 10_000
    assert "tasks:    9896/10000 ok, 104 failed\n" in status

    text = report.render_final_report(state, lambda t, n: ["boom"])
    assert "Graph omitted: 10000 tasks and 19989 dependencies" in text
    assert "`orch graph 20261125_090000_a1b2c3` prints it." in text
    assert "Timeline omitted: 10000 attempts are more than Mermaid renders." in text
    assert "```mermaid" not in text
    assert text.count("\n### `t") == 104


def test_report_stderr_tail_drops_colour_codes_and_accepts_bytes() -> None:
    lines = [b"\x1b[31mFAILED\x1b[0m tests/test_x.py\r\n", "tab\there\x07\n", b"caf\xc3\xa9 \xff"]
    text = report.render_final_report(failed_run(), lambda t, n: lines)
    assert "```text\nFAILED tests/test_x.py\ntab\there\ncafé \ufffd\n```\n" in text


@pytest.mark.parametrize(("n", "drawn"), [(32, True), (33, False)])
def test_graph_is_left_out_past_mermaids_edge_limit(n: int, drawn: bool) -> None:
    # Every task depends on all before it: n*(n-1)/2 edges, 496 for 32 tasks and 528 for 33,
    # in far less text than Mermaid's 50,000 characters.
    ids = [f"t{i}" for i in range(n)]
    state = run_state({tid: task(tid, "SUCCESS", ids[:i], []) for i, tid in enumerate(ids)})
    text = report.render_final_report(state, no_tail)
    assert ("```mermaid\nflowchart LR\n" in text) is drawn
    assert (f"Graph omitted: {n} tasks and 528 dependencies" in text) is not drawn
