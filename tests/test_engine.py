"""The engine end to end: real orch processes running real tasks."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import List, Tuple

from conftest import PYTHON, Orch, orch_env, peak_rss_kib, run_id_of

STATE_FIELDS = {
    "schema_version",
    "run_id",
    "status",
    "goal",
    "created_at",
    "updated_at",
    "home",
    "workdir",
    "max_parallel",
    "fail_fast",
    "tasks",
}
TASK_FIELDS = {
    "status",
    "depends_on",
    "cmd",
    "attempts",
    "started_at",
    "ended_at",
    "duration_sec",
    "exit_code",
    "timed_out",
    "canceled",
    "skip_reason",
    "stdout_path",
    "stderr_path",
    "artifact_paths",
}


def _intervals(directory: Path) -> List[Tuple[float, float]]:
    spans = []
    for path in directory.glob("*.span"):
        start, end = path.read_text().split()
        spans.append((float(start), float(end)))
    return spans


def _max_overlap(spans: List[Tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


SPAN_TASK = (
    'sh -c \'s=$(python3 -c "import time; print(time.time())"); sleep {sleep}; '
    'e=$(python3 -c "import time; print(time.time())"); echo "$s $e" > spans/{name}.span\''
)


def test_parallel_bound_is_reached_and_never_exceeded(orch: Orch) -> None:
    (orch.workdir / "spans").mkdir()
    tasks = "\n".join(
        f"  - id: t{i}\n    cmd: {json.dumps(SPAN_TASK.format(sleep=0.4, name=f't{i}'))}"
        for i in range(8)
    )
    plan = orch.plan(f"tasks:\n{tasks}\n")
    proc = orch.run("run", plan, "--max-parallel", "3")
    assert proc.returncode == 0, proc.stderr
    spans = _intervals(orch.workdir / "spans")
    assert len(spans) == 8
    assert _max_overlap(spans) == 3


def test_dependency_order_and_run_id_first(orch: Orch) -> None:
    (orch.workdir / "spans").mkdir()
    plan = orch.plan(
        f"""
        tasks:
          - id: c
            cmd: {json.dumps(SPAN_TASK.format(sleep=0.1, name="c"))}
            depends_on: [b]
          - id: a
            cmd: {json.dumps(SPAN_TASK.format(sleep=0.2, name="a"))}
          - id: b
            cmd: {json.dumps(SPAN_TASK.format(sleep=0.1, name="b"))}
            depends_on: [a]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    spans = {p.stem: p.read_text().split() for p in (orch.workdir / "spans").glob("*.span")}
    assert float(spans["a"][1]) <= float(spans["b"][0])
    assert float(spans["b"][1]) <= float(spans["c"][0])
    state = orch.state(run_id)
    assert state["status"] == "SUCCESS"
    assert list(state["tasks"]) == ["c", "a", "b"]


def test_failure_skips_dependents_and_independent_branch_goes_on(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: bad
            cmd: ["sh", "-c", "echo oops >&2; exit 7"]
          - id: child
            cmd: ["true"]
            depends_on: [bad]
          - id: grandchild
            cmd: ["true"]
            depends_on: [child]
          - id: other
            cmd: ["sh", "-c", "sleep 0.3"]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 3, proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    assert tasks["bad"]["status"] == "FAILED"
    assert tasks["bad"]["exit_code"] == 7
    for skipped in ("child", "grandchild"):
        assert tasks[skipped]["status"] == "SKIPPED"
        assert tasks[skipped]["skip_reason"] == "dependency_not_success"
        assert tasks[skipped]["attempts"] == 0
    assert tasks["other"]["status"] == "SUCCESS"


def test_fail_fast_lets_running_finish_and_skips_the_rest(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: slow
            cmd: ["sh", "-c", "sleep 0.8; echo done > slow.txt"]
          - id: bad
            cmd: ["sh", "-c", "sleep 0.1; exit 1"]
          - id: later1
            cmd: ["true"]
          - id: later2
            cmd: ["true"]
        """
    )
    proc = orch.run("run", plan, "--max-parallel", "2", "--fail-fast")
    assert proc.returncode == 3, proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    assert tasks["slow"]["status"] == "SUCCESS"
    assert (orch.workdir / "slow.txt").exists()
    assert tasks["bad"]["status"] == "FAILED"
    for name in ("later1", "later2"):
        assert tasks[name]["status"] == "SKIPPED"
        assert tasks[name]["skip_reason"] == "fail_fast"


def test_retries_count_and_backoff(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: flaky
            cmd: ["sh", "-c", "date +%s.%N >> times.txt; n=$(wc -l < times.txt); [ $n -ge 3 ]"]
            retries: 3
            retry_backoff_sec: [0.3, 0.6]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    task = orch.state(run_id_of(proc.stdout))["tasks"]["flaky"]
    assert task["status"] == "SUCCESS"
    assert task["attempts"] == 3
    assert [h["exit_code"] for h in task["history"]] == [1, 1, 0]
    times = [float(t) for t in (orch.workdir / "times.txt").read_text().split()]
    assert times[1] - times[0] >= 0.3
    assert times[2] - times[1] >= 0.6


def test_retries_exhausted_is_failed_with_all_attempts(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: always
            cmd: ["sh", "-c", "echo attempt $ORCH_ATTEMPT; exit 2"]
            retries: 2
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 3
    run_id = run_id_of(proc.stdout)
    task = orch.state(run_id)["tasks"]["always"]
    assert task["status"] == "FAILED"
    assert task["attempts"] == 3
    assert task["exit_code"] == 2
    logs = orch.run("logs", run_id, "--task", "always", "--stream", "stdout", "--attempt", "2")
    assert logs.returncode == 0, logs.stderr
    assert "attempt 2" in logs.stdout
    assert "attempt 1" not in logs.stdout.replace("attempt 1 ", "")
    assert "attempt 3" not in logs.stdout


def test_timeout_kills_the_whole_group_including_grandchildren(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: hang
            cmd: ["sh", "-c", "sleep 60 & echo $! > grandchild.pid; wait"]
            timeout_sec: 0.5
        """
    )
    began = time.monotonic()
    proc = orch.run("run", plan)
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - began < 20
    task = orch.state(run_id_of(proc.stdout))["tasks"]["hang"]
    assert task["status"] == "FAILED"
    assert task["timed_out"] is True
    pid = int((orch.workdir / "grandchild.pid").read_text())
    _assert_gone(pid)


def _assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat_path = Path(f"/proc/{pid}/stat")
        if stat_path.exists() and stat_path.read_text().split(")")[-1].split()[0] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} survived")


def test_stdin_is_at_eof(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: reader
            cmd: ["sh", "-c", "cat > got.txt; echo read-done"]
            timeout_sec: 10
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    assert (orch.workdir / "got.txt").read_text() == ""


def test_missing_program_and_cwd_fail_the_task_not_orch(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: noprog
            cmd: ["definitely-not-a-program-xyz"]
          - id: nocwd
            cmd: ["true"]
            cwd: "no/such/dir"
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    tasks = orch.state(run_id_of(proc.stdout))["tasks"]
    assert tasks["noprog"]["status"] == "FAILED"
    assert "definitely-not-a-program-xyz" in tasks["noprog"]["error"]
    # Logs hold the task's bytes only: a task that never started wrote none.
    assert not Path(tasks["noprog"]["stderr_path"]).exists()
    assert tasks["nocwd"]["status"] == "FAILED"
    assert tasks["nocwd"]["error"]


def test_state_fields_env_and_private_run_dir(orch: Orch) -> None:
    plan = orch.plan(
        """
        goal: "check fields"
        tasks:
          - id: envtask
            cmd: ["sh", "-c", "echo $ORCH_TASK_ID $ORCH_ATTEMPT $SECRET_TOKEN"]
            env: {SECRET_TOKEN: "hunter2-value"}
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    state = orch.state(run_id)
    assert set(state) >= STATE_FIELDS
    assert state["goal"] == "check fields"
    assert state["max_parallel"] == 4 and state["fail_fast"] is False
    task = state["tasks"]["envtask"]
    assert set(task) >= TASK_FIELDS
    assert task["attempts"] == 1 and task["exit_code"] == 0 and task["timed_out"] is False
    assert task["duration_sec"] >= 0
    out = Path(task["stdout_path"]).read_text()
    assert "envtask 1 hunter2-value" in out
    run_dir = orch.run_dir(run_id)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "state.json").stat().st_mode) == 0o600
    # The env value reaches the task only: not state, report, progress or status.
    for text in (
        (run_dir / "state.json").read_text(),
        (run_dir / "report" / "final_report.md").read_text(),
        proc.stderr,
        orch.run("status", run_id).stdout,
        orch.run("status", run_id, "--json").stdout,
    ):
        assert "hunter2-value" not in text


def test_invalid_plan_exits_2_and_creates_no_run(orch: Orch) -> None:
    plan = orch.plan("tasks:\n  - id: a\n    cmd: []\n")
    proc = orch.run("run", plan)
    assert proc.returncode == 2
    assert "plan.yaml:3:" in proc.stderr
    assert not (orch.home / "runs").exists()


def test_status_list_and_report(orch: Orch) -> None:
    plan = orch.plan(
        """
        goal: "report me"
        tasks:
          - id: ok
            cmd: ["true"]
          - id: bad
            cmd: ["sh", "-c", "echo the-error-line >&2; exit 1"]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 3
    run_id = run_id_of(proc.stdout)
    status = orch.run("status", run_id)
    assert status.returncode == 0 and "bad" in status.stdout and "FAILED" in status.stdout
    as_json = json.loads(orch.run("status", run_id, "--json").stdout)
    assert as_json["tasks"]["ok"]["status"] == "SUCCESS"
    listing = orch.run("list")
    assert run_id in listing.stdout and "report me" in listing.stdout
    listed = json.loads(orch.run("list", "--json").stdout)
    assert listed[0]["run_id" if "run_id" in listed[0] else "id"] == run_id
    report = (orch.run_dir(run_id) / "report" / "final_report.md").read_text()
    assert "the-error-line" in report
    assert "```mermaid" in report


def test_unknown_and_malformed_run_ids_exit_2(orch: Orch) -> None:
    for bad in ("../x", "/etc", "a/..", "20260101_000000_abcdef", "x" * 10000):
        for command in (["status", bad], ["logs", bad], ["cancel", bad], ["resume", bad]):
            proc = orch.run(*command)
            assert proc.returncode == 2, (command, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert proc.stderr.strip()


def test_state_json_always_parses_during_a_500_task_run(orch: Orch) -> None:
    tasks = "\n".join(f'  - id: t{i}\n    cmd: ["true"]' for i in range(500))
    plan = orch.plan(f"tasks:\n{tasks}\n")
    runner = orch.popen("run", plan, "--max-parallel", "8")
    assert runner.stdout is not None
    run_id = run_id_of(runner.stdout.readline())
    state_path = orch.run_dir(run_id) / "state.json"
    reads = 0
    stop = threading.Event()
    errors: List[str] = []

    def hammer() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                json.loads(state_path.read_bytes())
                reads += 1
            except ValueError as err:
                errors.append(str(err))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        assert runner.wait(timeout=120) == 0
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert reads > 10
    assert orch.state(run_id)["status"] == "SUCCESS"


def test_big_output_keeps_orch_memory_small(orch: Orch) -> None:
    plan = orch.plan(
        """
        tasks:
          - id: spam
            cmd: ["sh", "-c", "head -c 200000000 /dev/zero"]
        """
    )
    code, rss_kib = peak_rss_kib(
        [PYTHON, "-m", "orch", "run", plan, "--home", str(orch.home)],
        orch.workdir,
        orch_env(),
        orch.workdir / "orch.out",
    )
    assert code == 0
    assert rss_kib < 60 * 1024, f"peak RSS {rss_kib} KiB"
    run_dir = next((orch.home / "runs").iterdir())
    assert (run_dir / "logs" / "spam.out.log").stat().st_size == 200_000_000


def test_list_names_a_damaged_run_and_still_lists_the_others(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    good = run_id_of(orch.run("run", plan).stdout)
    bad = run_id_of(orch.run("run", plan).stdout)
    (orch.run_dir(bad) / "state.json").write_text("{not json")
    listing = orch.run("list")
    assert listing.returncode == 0
    assert good in listing.stdout and bad not in listing.stdout
    assert f"orch: skipped run {bad}:" in listing.stderr
    assert "state.json" in listing.stderr


def test_bad_numeric_arguments_exit_2_with_one_line(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    for args, message in (
        (["run", plan, "--max-parallel", "0"], "--max-parallel: expected a whole number >= 1"),
        (["run", plan, "--max-parallel", "two"], "--max-parallel: expected a whole number >= 1"),
        (
            ["logs", "20260101_000000_abcdef", "--tail", "-1"],
            "--tail: expected a whole number >= 0",
        ),
        (["logs", "20260101_000000_abcdef", "--attempt", "0"], "--attempt: expected a whole"),
    ):
        proc = orch.run(*args)
        assert proc.returncode == 2, args
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (orch.home / "runs").exists()


def test_every_task_gets_a_readable_orch_context(orch: Orch) -> None:
    # Tasks without dependencies share one context file; a task with some gets its own.
    show = 'import json, os; d = json.load(open(os.environ["ORCH_CONTEXT"])); print(json.dumps(d))'
    plan = orch.plan(
        f"""
        tasks:
          - id: first
            cmd: ["{PYTHON}", "-c", {json.dumps(show)}]
          - id: second
            cmd: ["{PYTHON}", "-c", {json.dumps(show)}]
          - id: after
            cmd: ["{PYTHON}", "-c", {json.dumps(show)}]
            depends_on: [first]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    tasks = orch.state(run_id)["tasks"]
    seen = {t: json.loads(Path(tasks[t]["stdout_path"]).read_text()) for t in tasks}
    for root in ("first", "second"):
        assert seen[root]["run_id"] == run_id and seen[root]["dependencies"] == {}
    assert seen["after"]["task_id"] == "after" and seen["after"]["attempt"] == 1
    assert seen["after"]["dependencies"]["first"]["status"] == "SUCCESS"


def test_tasks_with_the_same_dependencies_share_one_orch_context(orch: Orch) -> None:
    # A layer of a dense plan reads one file, written once; a task whose dependencies are its
    # own keeps its own file, with its task_id and attempt.
    show = (
        'import json, os; p = os.environ["ORCH_CONTEXT"]; '
        "print(json.dumps({'path': p, 'context': json.load(open(p))}))"
    )
    cmd = f'["{PYTHON}", "-c", {json.dumps(show)}]'
    plan = orch.plan(
        f"""
        tasks:
          - {{id: a, cmd: {cmd}}}
          - {{id: b, cmd: {cmd}}}
          - {{id: x, cmd: {cmd}, depends_on: [a, b]}}
          - {{id: y, cmd: {cmd}, depends_on: [a, b]}}
          - {{id: z, cmd: {cmd}, depends_on: [a]}}
        """
    )
    proc = orch.run("run", plan, "--max-parallel", "1")
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    tasks = orch.state(run_id)["tasks"]
    seen = {t: json.loads(Path(tasks[t]["stdout_path"]).read_text()) for t in tasks}
    context_dir = orch.run_dir(run_id) / "context"
    assert seen["x"]["path"] == seen["y"]["path"] == str(context_dir / "_deps-x.json")
    for task in ("x", "y"):
        shared = seen[task]["context"]
        assert "task_id" not in shared and "attempt" not in shared
        assert sorted(shared["dependencies"]) == ["a", "b"]
        assert shared["dependencies"]["b"]["status"] == "SUCCESS"
    assert seen["z"]["path"] == str(context_dir / "z.json")
    assert seen["z"]["context"]["task_id"] == "z" and seen["z"]["context"]["attempt"] == 1
    assert sorted(p.name for p in context_dir.iterdir()) == ["_deps-x.json", "_run.json", "z.json"]


def test_every_task_in_state_json_has_the_contract_fields_whatever_its_status(orch: Orch) -> None:
    # The contract lists the fields of each task in state.json: a task that failed, one
    # skipped because of it and one that never started (fail-fast) carry them too, in the
    # file itself (not only in what a reader rebuilds from the journal).
    plan = orch.plan(
        """
        tasks:
          - {id: bad, cmd: ["sh", "-c", "exit 3"]}
          - {id: child, cmd: ["true"], depends_on: [bad]}
          - {id: later, cmd: ["true"], depends_on: [child]}
          - {id: other, cmd: ["true"]}
        """
    )
    proc = orch.run("run", plan, "--max-parallel", "1", "--fail-fast")
    assert proc.returncode == 3, proc.stderr
    run_dir = orch.run_dir(run_id_of(proc.stdout))
    assert (run_dir / "journal.jsonl").read_bytes() == b""  # the snapshot is the whole state
    state = json.loads((run_dir / "state.json").read_bytes())
    assert set(state) >= STATE_FIELDS
    statuses = {t: e["status"] for t, e in state["tasks"].items()}
    assert statuses["bad"] == "FAILED" and statuses["child"] == "SKIPPED"
    for task_id, entry in state["tasks"].items():
        assert set(entry) >= TASK_FIELDS, (task_id, TASK_FIELDS - set(entry))
        assert isinstance(entry["artifact_paths"], list)
