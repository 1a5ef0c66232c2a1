"""Damaged state files: a clear error naming the file, exit 2, and the bytes left as they were."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from conftest import Orch, run_id_of

PLAN = """
tasks:
  - id: ok
    cmd: ["sh", "-c", "echo ok >> runs.txt"]
  - id: bad
    cmd: ["sh", "-c", "echo bad >> runs.txt; test -f fixed"]
"""


def _failed_run(orch: Orch) -> str:
    proc = orch.run("run", orch.plan(PLAN))
    assert proc.returncode == 3, proc.stderr
    return run_id_of(proc.stdout)


def _next_seq(run_dir: Path) -> int:
    return int(json.loads((run_dir / "state.json").read_bytes())["journal_seq"]) + 1


def _truncate(run_dir: Path) -> str:
    data = (run_dir / "state.json").read_bytes()
    (run_dir / "state.json").write_bytes(data[: len(data) // 2])
    return "state.json"


def _garble(run_dir: Path) -> str:
    (run_dir / "state.json").write_bytes(b"\x00\xff{{ not json at all \x89PNG")
    return "state.json"


def _empty(run_dir: Path) -> str:
    (run_dir / "state.json").write_bytes(b"")
    return "state.json"


def _not_a_state(run_dir: Path) -> str:
    (run_dir / "state.json").write_bytes(b'["a list", "not a state"]\n')
    return "state.json"


def _wrong_shapes(run_dir: Path) -> str:
    state = json.loads((run_dir / "state.json").read_bytes())
    state["tasks"]["bad"] = "not a task"
    (run_dir / "state.json").write_text(json.dumps(state))
    return "state.json"


def _garbled_journal_line(run_dir: Path) -> str:
    n = _next_seq(run_dir)
    good = json.dumps({"r": {"goal": "later"}, "n": n + 1})
    (run_dir / "journal.jsonl").write_bytes(b'{"r": {"goal": GARBAGE\n' + good.encode() + b"\n")
    return "journal.jsonl"


def _journal_for_unknown_task(run_dir: Path) -> str:
    n = _next_seq(run_dir)
    lines = [
        json.dumps({"t": "no-such-task", "s": {"status": "SUCCESS"}, "n": n}),
        json.dumps({"r": {"goal": "later"}, "n": n + 1}),
    ]
    (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
    return "journal.jsonl"


DAMAGE: Dict[str, Callable[[Path], str]] = {
    "truncated": _truncate,
    "garbled": _garble,
    "empty": _empty,
    "not-a-state": _not_a_state,
    "wrong-shapes": _wrong_shapes,
    "garbled-journal-line": _garbled_journal_line,
    "journal-for-unknown-task": _journal_for_unknown_task,
}
COMMANDS: List[List[str]] = [
    ["status", "--json"],
    ["logs", "--task", "bad"],
    ["resume"],
    ["cancel"],
]


def _snapshot(run_dir: Path) -> Dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "lock"}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_state_is_reported_and_never_overwritten(orch: Orch, kind: str) -> None:
    run_id = _failed_run(orch)
    run_dir = orch.run_dir(run_id)
    name = DAMAGE[kind](run_dir)
    (orch.workdir / "fixed").touch()
    before = _snapshot(run_dir)
    runs_before = (orch.workdir / "runs.txt").read_text()
    for command in COMMANDS:
        proc = orch.run(command[0], run_id, *command[1:])
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, command
        assert str(run_dir / name) in proc.stderr, (command, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (command, proc.stderr)
        assert not proc.stdout.startswith("run_id:"), command
        assert _snapshot(run_dir) == before, command
    assert (orch.workdir / "runs.txt").read_text() == runs_before
    # The listing goes on without the damaged run.
    listing = orch.run("list")
    assert listing.returncode == 0, listing.stderr


def test_newer_schema_version_is_refused_with_a_clear_message(orch: Orch) -> None:
    run_id = _failed_run(orch)
    run_dir = orch.run_dir(run_id)
    state = json.loads((run_dir / "state.json").read_bytes())
    state["schema_version"] = 99
    (run_dir / "state.json").write_text(json.dumps(state))
    before = _snapshot(run_dir)
    for command in COMMANDS:
        proc = orch.run(command[0], run_id, *command[1:])
        assert proc.returncode == 2, (command, proc.stderr)
        assert "newer" in proc.stderr and "schema_version 99" in proc.stderr, proc.stderr
        assert str(run_dir / "state.json") in proc.stderr
        assert _snapshot(run_dir) == before


def _torn_journal(run_dir: Path) -> None:
    n = _next_seq(run_dir)
    whole = json.dumps({"r": {"goal": "from the journal"}, "n": n})
    torn = json.dumps({"t": "bad", "s": {"status": "SUCCESS"}, "n": n + 1})[:20]
    (run_dir / "journal.jsonl").write_bytes(whole.encode() + b"\n" + torn.encode())


def test_a_torn_last_journal_line_is_ignored(orch: Orch) -> None:
    run_id = _failed_run(orch)
    run_dir = orch.run_dir(run_id)
    _torn_journal(run_dir)
    shown = json.loads(orch.run("status", run_id, "--json").stdout)
    assert shown["goal"] == "from the journal"
    assert shown["tasks"]["bad"]["status"] == "FAILED"
    assert orch.run("logs", run_id).returncode == 0
    (orch.workdir / "fixed").touch()
    proc = orch.run("resume", run_id)
    assert proc.returncode == 0, proc.stderr
    state = orch.state(run_id)
    assert state["goal"] == "from the journal"
    assert state["tasks"]["bad"]["status"] == "SUCCESS"


def test_a_torn_line_does_not_damage_what_resume_writes_after_it(orch: Orch) -> None:
    # resume appends to the journal; were it to append after the torn fragment, the
    # fragment would become a garbled line in the middle and the state unreadable once
    # this resume is killed too.
    plan = orch.plan(
        """
        tasks:
          - id: slow
            cmd: ["sh", "-c", "test -f fixed || exit 1; touch up; sleep 60"]
        """
    )
    run_id = run_id_of(orch.run("run", plan).stdout)
    run_dir = orch.run_dir(run_id)
    _torn_journal(run_dir)
    (orch.workdir / "fixed").touch()
    resumer = orch.popen("resume", run_id)
    deadline = time.monotonic() + 30
    while not (orch.workdir / "up").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    resumer.kill()
    resumer.wait()
    state: Dict[str, Any] = orch.state(run_id)
    assert state["goal"] == "from the journal"
    assert state["tasks"]["slow"]["status"] == "RUNNING"
    cancel = orch.run("cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    assert orch.state(run_id)["status"] == "CANCELED"


def test_a_damaged_plan_snapshot_is_reported_on_resume(orch: Orch) -> None:
    run_id = _failed_run(orch)
    run_dir = orch.run_dir(run_id)
    (run_dir / "plan.yaml").write_bytes(b"tasks: [\n")
    before = _snapshot(run_dir)
    proc = orch.run("resume", run_id)
    assert proc.returncode == 2, proc.stderr
    assert str(run_dir / "plan.yaml") in proc.stderr and "Traceback" not in proc.stderr
    assert _snapshot(run_dir) == before
    assert orch.run("status", run_id).returncode == 0


def test_a_crash_between_snapshot_and_journal_truncation_replays_nothing_twice(
    orch: Orch,
) -> None:
    from orch.store import read_state

    plan = orch.plan(
        """
        tasks:
          - id: a
            cmd: ["sh", "-c", "touch up; sleep 60"]
          - id: b
            cmd: ["true"]
        """
    )
    runner = orch.popen("run", plan)
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    deadline = time.monotonic() + 30
    while orch.state(run_id)["tasks"]["b"]["status"] != "SUCCESS":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runner.kill()
    runner.wait()
    run_dir = orch.run_dir(run_id)
    # Killed well within a second of the session's first snapshot: no compaction since.
    assert (run_dir / "journal.jsonl").stat().st_size > 0
    state = read_state(str(run_dir))
    # What a compaction leaves when killed after replacing the snapshot but before
    # truncating the journal: the records are in both, and must count once.
    (run_dir / "state.json").write_text(json.dumps(state))
    assert read_state(str(run_dir)) == state
    assert len(state["tasks"]["a"]["history"]) == 1
    cancel = orch.run("cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    after = orch.state(run_id)
    assert len(after["tasks"]["a"]["history"]) == 1
    assert after["status"] == "CANCELED"
