"""orch.logs on real files: tails, attempt slices, raw bytes, headers and end lines, --follow."""

from __future__ import annotations

import io
import os
import random
import threading
import tracemalloc
from typing import Any, Dict, List, Optional, Tuple

import pytest

from orch import logs
from orch.errors import StateError, UsageError


def _task(tmp: Any, task_id: str, status: str = "SUCCESS") -> Dict[str, Any]:
    return {
        "status": status,
        "attempts": 0,
        "history": [],
        "skip_reason": None,
        "stdout_path": str(tmp / "logs" / f"{task_id}.out.log"),
        "stderr_path": str(tmp / "logs" / f"{task_id}.err.log"),
    }


def _state(tmp: Any, *task_ids: str) -> Dict[str, Any]:
    (tmp / "logs").mkdir(exist_ok=True)
    return {
        "run_id": "R1",
        "status": "SUCCESS",
        "run_dir": str(tmp),
        "tasks": {t: _task(tmp, t) for t in task_ids},
    }


def _ended(n: int, out_off: int, err_off: int, **result: Any) -> Dict[str, Any]:
    entry: Dict[str, Any] = {
        "attempt": n,
        "started_at": "2026-11-25T09:00:00+00:00",
        "ended_at": "2026-11-25T09:00:02+00:00",
        "duration_sec": 2.34,
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "timed_out_by": None,
        "canceled": False,
        "error": None,
        "pid": 100 + n,
        "stdout_offset": out_off,
        "stderr_offset": err_off,
    }
    entry.update(result)
    return entry


def _attempts(
    state: Dict[str, Any],
    task_id: str,
    outs: List[bytes],
    errs: List[bytes],
    results: Optional[List[Dict[str, Any]]] = None,
) -> None:
    """Write the logs of several attempts as the runner does (the task's bytes only),
    recording each attempt's offsets and result in history."""
    task = state["tasks"][task_id]
    out_off = err_off = 0
    with open(task["stdout_path"], "ab") as fo, open(task["stderr_path"], "ab") as fe:
        for n, (out, err) in enumerate(zip(outs, errs), start=1):
            result = results[n - 1] if results else {"exit_code": 0 if n == len(outs) else 1}
            task["history"].append(_ended(n, out_off, err_off, **result))
            fo.write(out)
            fe.write(err)
            out_off += len(out)
            err_off += len(err)
    task["attempts"] = len(outs)


def _render(state: Dict[str, Any], ids: List[str], stream: str, tail: Optional[int] = None,
            attempt: Optional[int] = None, **kwargs: Any) -> bytes:  # fmt: skip
    buf = io.BytesIO()
    logs.write_logs(buf, state, ids, stream, tail, attempt, **kwargs)
    return buf.getvalue()


def _naive_tail(data: bytes, n: int) -> List[bytes]:
    lines = data.splitlines(keepends=True) if b"\r" not in data else None
    assert lines is not None
    return lines[-n:] if n > 0 else []


# --- tail_lines ---------------------------------------------------------------------------


def test_tail_small_file_with_and_without_final_newline(tmp_path: Any) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"one\ntwo\nthree\n")
    assert logs.tail_lines(str(p), 2) == [b"two\n", b"three\n"]
    assert logs.tail_lines(str(p), 10) == [b"one\n", b"two\n", b"three\n"]
    assert logs.tail_lines(str(p), 0) == []
    p.write_bytes(b"one\ntwo\nno newline")
    assert logs.tail_lines(str(p), 2) == [b"two\n", b"no newline"]
    assert logs.tail_lines(str(p), 1) == [b"no newline"]


def test_tail_empty_blank_lines_and_missing(tmp_path: Any) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"")
    assert logs.tail_lines(str(p), 3) == []
    p.write_bytes(b"\n\n\n")
    assert logs.tail_lines(str(p), 2) == [b"\n", b"\n"]
    assert logs.tail_lines(str(tmp_path / "missing.log"), 5) == []


def test_tail_keeps_arbitrary_bytes(tmp_path: Any) -> None:
    p = tmp_path / "bin.log"
    p.write_bytes(b"\xff\xfe\x00\x1b[31mred\r\n\x80last")
    assert logs.tail_lines(str(p), 2) == [b"\xff\xfe\x00\x1b[31mred\r\n", b"\x80last"]


@pytest.mark.parametrize("block", [1, 3, 7, 64 * 1024])
def test_tail_matches_naive_across_block_boundaries(
    tmp_path: Any, monkeypatch: Any, block: int
) -> None:
    # A tiny block size makes every line straddle block boundaries.
    monkeypatch.setattr(logs, "_BLOCK", block)
    rng = random.Random(block)
    p = tmp_path / "r.log"
    for trial in range(30):
        parts = [b"x" * rng.randint(0, 12) for _ in range(rng.randint(0, 15))]
        data = b"\n".join(parts) + (b"\n" if trial % 2 else b"")
        p.write_bytes(data)
        for n in (0, 1, 2, 5, 40):
            assert logs.tail_lines(str(p), n) == _naive_tail(data, n), (data, n)


def test_tail_of_line_longer_than_block(tmp_path: Any) -> None:
    p = tmp_path / "long.log"
    long_line = b"y" * (200 * 1024) + b"\n"
    p.write_bytes(b"first\n" + long_line + b"end\n")
    assert logs.tail_lines(str(p), 2, max_bytes=1 << 20) == [long_line, b"end\n"]
    # By default a tail holds at most TAIL_BYTES, however long the line: the line is cut.
    cut = logs.tail_lines(str(p), 2)
    assert cut == [long_line[-(logs.TAIL_BYTES - 4) :], b"end\n"]


def test_tail_of_a_huge_line_without_newline_is_bounded(tmp_path: Any) -> None:
    p = tmp_path / "huge.log"
    with open(p, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse, no newline anywhere
    lines = logs.tail_lines(str(p), 5)
    assert len(lines) == 1 and len(lines[0]) == logs.TAIL_BYTES


def test_tail_of_1gb_sparse_file_reads_only_the_end(tmp_path: Any) -> None:
    state = _state(tmp_path, "big")
    p = tmp_path / "logs" / "big.out.log"
    lines = [f"line {i}\n".encode() for i in range(100)]
    with open(p, "wb") as f:
        f.truncate(1 << 30)  # sparse: no disk used for the first GB
        f.seek(1 << 30)
        f.write(b"\n" + b"".join(lines))
    assert os.path.getsize(p) > 1 << 30
    tracemalloc.start()
    try:
        got = logs.tail_lines(str(p), 50)
        out = _render(state, ["big"], "stdout", tail=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == lines[-50:]
    assert out == b"".join(lines[-3:])
    assert peak < 4 * 1024 * 1024, peak  # a few blocks, never the file
    p.unlink()  # sparse, but a copy or an archive of the temp dir would not be


# --- attempt_range ------------------------------------------------------------------------


def test_attempt_ranges_from_history_offsets(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    _attempts(state, "t", [b"o1\n", b"o2a\no2b\n", b"o3"], [b"e1\n", b"", b"e3\n"])
    task = state["tasks"]["t"]
    with open(task["stdout_path"], "rb") as f:
        data = f.read()
    assert data == b"o1\no2a\no2b\no3"  # the task's bytes, nothing else
    size = len(data)
    ranges = [logs.attempt_range(task, "stdout", n, size) for n in (1, 2, 3)]
    assert [data[a:b] for a, b in ranges] == [b"o1\n", b"o2a\no2b\n", b"o3"]
    assert logs.attempt_range(task, "stdout", None, size) == (0, size)
    with open(task["stderr_path"], "rb") as f:
        err = f.read()
    a, b = logs.attempt_range(task, "stderr", 2, len(err))
    assert err[a:b] == b""


def test_attempt_range_clamps_to_file_size() -> None:
    task = {"history": [{"attempt": 1, "stdout_offset": 0}, {"attempt": 2, "stdout_offset": 50}]}
    assert logs.attempt_range(task, "stdout", 1, 20) == (0, 20)
    assert logs.attempt_range(task, "stdout", 2, 20) == (20, 20)


def test_attempt_range_unknown_attempt_messages() -> None:
    task = {"history": [{"attempt": n, "stdout_offset": 0} for n in (1, 2, 3)]}
    with pytest.raises(UsageError) as exc:
        logs.attempt_range(task, "stdout", 4, 10, task_id="x")
    assert str(exc.value) == "task 'x' has attempts 1..3, not 4 (--attempt)"
    with pytest.raises(UsageError) as exc:
        logs.attempt_range({"history": []}, "stdout", 1, 0, task_id="x")
    assert str(exc.value) == "task 'x' has no attempts yet (--attempt 1)"
    with pytest.raises(StateError, match="no valid stdout_offset for attempt 2"):
        logs.attempt_range({"history": [{"attempt": 2}]}, "stdout", 2, 5, task_id="x")


# --- describe_attempt ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "limit", "expected"),
    [
        ({"exit_code": 1}, None, "exit 1 after 2.3s"),
        ({"exit_code": 0, "duration_sec": 125.0}, None, "exit 0 after 2m05s"),
        ({"exit_code": None, "signal": 9}, None, "killed by SIGKILL after 2.3s"),
        ({"exit_code": None, "signal": 15, "timed_out": True, "timed_out_by": "timeout_sec"},
         60.0, "timed out after 60s (timeout_sec)"),
        ({"exit_code": None, "signal": 15, "timed_out": True, "timed_out_by": "idle_timeout_sec"},
         None, "timed out after 2.3s (idle_timeout_sec)"),
        ({"exit_code": None, "timed_out": True, "timed_out_by": None}, 0.5,
         "timed out after 0.5s (timeout_sec)"),
        ({"exit_code": None, "signal": 15, "canceled": True}, None, "canceled after 2.3s"),
        ({"exit_code": None, "pid": None, "duration_sec": 0.0,
          "error": "cannot start 'nope': No such file or directory"}, None,
         "not started: cannot start 'nope': No such file or directory"),
        ({"exit_code": None, "duration_sec": None, "error": "interrupted"}, None, "interrupted"),
        ({"exit_code": 0, "error": "required output missing: dist/**"}, None,
         "exit 0 after 2.3s; required output missing: dist/**"),
        ({"ended_at": None, "exit_code": None}, None, None),
    ],
)  # fmt: skip
def test_describe_attempt(result: Dict[str, Any], limit: Optional[float], expected: str) -> None:
    assert logs.describe_attempt(_ended(1, 0, 0, **result), limit) == expected


# --- write_logs: raw ----------------------------------------------------------------------


def test_one_stream_of_one_task_is_exactly_its_bytes(tmp_path: Any) -> None:
    state = _state(tmp_path, "build")
    _attempts(state, "build", [b'{"a": 1}\n', b'{"b": \xff2}'], [b"warn\n", b"err"])
    assert _render(state, ["build"], "stdout") == b'{"a": 1}\n{"b": \xff2}'
    assert _render(state, ["build"], "stderr") == b"warn\nerr"
    assert _render(state, ["build"], "stdout", attempt=1) == b'{"a": 1}\n'
    assert _render(state, ["build"], "stdout", attempt=2) == b'{"b": \xff2}'
    assert _render(state, ["build"], "stderr", attempt=2, tail=5) == b"err"


def test_attempt_with_tail_and_bytes_unchanged(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    _attempts(state, "t", [b"1a\n1b\n", b"\xff2a\r\n2b\n\x00", b"3\n"], [b"", b"", b""])
    assert _render(state, ["t"], "stdout", attempt=2) == b"\xff2a\r\n2b\n\x00"
    assert _render(state, ["t"], "stdout", tail=2, attempt=2) == b"2b\n\x00"
    assert _render(state, ["t"], "stdout", tail=1, attempt=1) == b"1b\n"
    assert _render(state, ["t"], "stdout", tail=2) == b"2b\n\x003\n"  # across attempts
    assert _render(state, ["t"], "stdout", tail=0) == b""


def test_log_path_falls_back_to_run_dir(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    del state["tasks"]["t"]["stdout_path"]
    (tmp_path / "logs" / "t.out.log").write_bytes(b"hello\n")
    assert _render(state, ["t"], "stdout") == b"hello\n"


# --- write_logs: headers and end lines ----------------------------------------------------


def test_headers_and_end_lines_for_every_attempt(tmp_path: Any) -> None:
    state = _state(tmp_path, "build", "deploy")
    _attempts(state, "build", [b"compiling\n", b"compiling\nno newline"], [b"error: x\n", b""])
    state["tasks"]["deploy"].update(status="SKIPPED", skip_reason="dependency_not_success")
    expected = (
        "==> task build attempt 1/2 stdout <==\n"
        "compiling\n"
        "==> task build attempt 1/2 stderr <==\n"
        "error: x\n"
        "==> task build attempt 1/2: exit 1 after 2.3s <==\n"
        "\n"
        "==> task build attempt 2/2 stdout <==\n"
        "compiling\n"
        "no newline\n"
        "==> task build attempt 2/2: exit 0 after 2.3s <==\n"
        "\n"
        "==> task deploy: no attempts (SKIPPED: dependency_not_success) <==\n"
    )
    assert _render(state, [], "both").decode() == expected
    # --task with both streams, and --stream without --task, get the same shape.
    assert _render(state, ["build"], "both").decode() == expected.split("\n==> task deploy")[0]
    assert _render(state, [], "stderr").decode() == (
        "==> task build attempt 1/2 stderr <==\n"
        "error: x\n"
        "==> task build attempt 1/2: exit 1 after 2.3s <==\n"
        "\n"
        "==> task build attempt 2/2: exit 0 after 2.3s <==\n"
        "\n"
        "==> task deploy: no attempts (SKIPPED: dependency_not_success) <==\n"
    )
    assert _render(state, ["build"], "both", attempt=2).decode() == (
        "==> task build attempt 2/2 stdout <==\n"
        "compiling\n"
        "no newline\n"
        "==> task build attempt 2/2: exit 0 after 2.3s <==\n"
    )


def test_tail_counts_only_the_task_lines(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    _attempts(state, "t", [b"a1\na2\n", b"b1\nb2\nb3\n"], [b"e1\n", b"f1\n"])
    got = _render(state, ["t"], "both", tail=4).decode()
    assert got == (
        "==> task t attempt 1/2 stdout <==\n"
        "a2\n"
        "==> task t attempt 1/2 stderr <==\n"
        "e1\n"
        "==> task t attempt 1/2: exit 1 after 2.3s <==\n"
        "\n"
        "==> task t attempt 2/2 stdout <==\n"
        "b1\nb2\nb3\n"
        "==> task t attempt 2/2 stderr <==\n"
        "f1\n"
        "==> task t attempt 2/2: exit 0 after 2.3s <==\n"
    )
    # Attempts the tail does not reach are left out, end line and all; the last one stays.
    assert _render(state, ["t"], "stdout", tail=2, attempt=None) == b"b2\nb3\n"
    assert _render(state, [], "stdout", tail=2).decode() == (
        "==> task t attempt 2/2 stdout <==\nb2\nb3\n==> task t attempt 2/2: exit 0 after 2.3s <==\n"
    )
    assert _render(state, [], "both", tail=0).decode() == (
        "==> task t attempt 2/2: exit 0 after 2.3s <==\n"
    )


def test_timed_out_attempt_shows_the_limit_from_the_plan(tmp_path: Any) -> None:
    state = _state(tmp_path, "agent")
    idle = {"exit_code": None, "signal": 15, "timed_out": True, "timed_out_by": "idle_timeout_sec"}
    _attempts(state, "agent", [b"thinking...\n"], [b""], [idle])
    calls: List[int] = []

    def limits() -> Dict[str, Any]:
        calls.append(1)
        return {"agent": (1800.0, 60.0)}

    got = _render(state, [], "both", limits=limits).decode()
    assert got == (
        "==> task agent attempt 1/1 stdout <==\n"
        "thinking...\n"
        "==> task agent attempt 1/1: timed out after 60s (idle_timeout_sec) <==\n"
    )
    assert calls == [1]
    # The plan is read only when a timed-out attempt is shown.
    calls.clear()
    other = _state(tmp_path, "x")
    _attempts(other, "x", [b""], [b""])
    _render(other, [], "both", limits=limits)
    assert calls == []


def test_running_and_interrupted_attempts(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    state["status"] = "RUNNING"
    _attempts(state, "t", [b"one\n", b"two\n"], [b"", b""])
    state["tasks"]["t"]["status"] = "RUNNING"
    state["tasks"]["t"]["history"][-1].update(ended_at=None, exit_code=None, duration_sec=None)
    running = _render(state, [], "both").decode()
    assert running.endswith("==> task t attempt 2/2 stdout <==\ntwo\n")  # no end line yet
    state["owner_alive"] = False  # orch was killed: the attempt will never end on its own
    assert (
        _render(state, [], "both")
        .decode()
        .endswith("two\n==> task t attempt 2/2: did not finish: no orch process owns the run <==\n")
    )


def test_bytes_no_attempt_entry_covers_get_a_plain_header(tmp_path: Any) -> None:
    # A child writes before its attempt is recorded; a reader in between sees bytes only.
    state = _state(tmp_path, "t")
    state["tasks"]["t"]["status"] = "RUNNING"
    (tmp_path / "logs" / "t.out.log").write_bytes(b"early\n")
    assert _render(state, [], "both").decode() == "==> task t stdout <==\nearly\n"


def test_task_not_started(tmp_path: Any) -> None:
    state = _state(tmp_path, "a", "later")
    state["tasks"]["later"]["status"] = "PENDING"
    _attempts(state, "a", [b"x\n"], [b""])
    assert _render(state, ["later"], "stdout") == b""
    assert _render(state, ["later", "a"], "stdout", tail=5).decode() == (
        "==> task later: no attempts (PENDING) <==\n"
        "\n"
        "==> task a attempt 1/1 stdout <==\n"
        "x\n"
        "==> task a attempt 1/1: exit 0 after 2.3s <==\n"
    )


def test_unknown_task_is_a_usage_error_with_suggestion(tmp_path: Any) -> None:
    state = _state(tmp_path, "build", "test")
    with pytest.raises(UsageError) as exc:
        _render(state, ["biuld"], "both")
    assert str(exc.value) == "unknown task 'biuld' in run R1 (did you mean 'build'?)"
    with pytest.raises(UsageError) as exc:
        _render(state, ["BUILD"], "both")
    assert str(exc.value) == "unknown task 'BUILD' in run R1 (did you mean 'build'?)"
    with pytest.raises(UsageError) as exc:
        _render(state, ["zzzzzz"], "both")
    assert str(exc.value) == "unknown task 'zzzzzz' in run R1"


def test_bad_arguments_write_nothing(tmp_path: Any) -> None:
    state = _state(tmp_path, "a", "b")
    _attempts(state, "a", [b"x\n", b"y\n"], [b"", b""])
    _attempts(state, "b", [b"z\n"], [b""])
    buf = io.BytesIO()
    with pytest.raises(UsageError, match=r"task 'b' has attempts 1\.\.1, not 2"):
        logs.write_logs(buf, state, ["a", "b"], "stdout", None, 2)
    assert buf.getvalue() == b""
    with pytest.raises(UsageError, match="--stream must be"):
        logs.write_logs(buf, state, ["a"], "all", None, None)
    with pytest.raises(UsageError, match="--tail must be >= 0"):
        logs.write_logs(buf, state, ["a"], "stdout", -1, None)
    assert buf.getvalue() == b""


def test_damaged_state_is_a_state_error(tmp_path: Any) -> None:
    with pytest.raises(StateError, match="no task table"):
        _render({"run_id": "R1", "tasks": []}, ["a"], "stdout")
    with pytest.raises(StateError, match="task 'a' is damaged"):
        _render({"run_id": "R1", "tasks": {"a": 3}}, ["a"], "stdout")


def test_a_fifo_named_as_a_log_is_refused_not_waited_on(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    os.mkfifo(state["tasks"]["t"]["stdout_path"])
    with pytest.raises(StateError, match="is not a regular file"):
        _render(state, ["t"], "stdout")


# --- follow -------------------------------------------------------------------------------


class _Run:
    """A run whose tasks a background thread drives, as the scheduler would."""

    def __init__(
        self, tmp: Any, task_status: str = "PENDING", ids: Tuple[str, ...] = ("t",)
    ) -> None:
        self.state = _state(tmp, *ids)
        self.state["status"] = "RUNNING"
        for task_id in ids:
            self.state["tasks"][task_id]["status"] = task_status
        self.lock = threading.Lock()
        self.reads = 0

    def read(self) -> Dict[str, Any]:
        with self.lock:
            self.reads += 1
            return {
                **self.state,
                "tasks": {
                    k: {**v, "history": [dict(h) for h in v["history"]]}
                    for k, v in self.state["tasks"].items()
                },
            }

    def set(self, status: str, task_id: str = "t") -> None:
        with self.lock:
            self.state["tasks"][task_id]["status"] = status

    def start_attempt(self, task_id: str = "t") -> None:
        with self.lock:
            task = self.state["tasks"][task_id]
            sizes = [_size(task["stdout_path"]), _size(task["stderr_path"])]
            n = len(task["history"]) + 1
            entry = _ended(n, *sizes, ended_at=None, exit_code=None, duration_sec=None)
            task["history"].append(entry)
            task["attempts"] = n
            task["status"] = "RUNNING"

    def end_attempt(self, task_id: str = "t", status: str = "PENDING", code: int = 1) -> None:
        with self.lock:
            task = self.state["tasks"][task_id]
            task["history"][-1].update(
                ended_at="2026-11-25T09:00:01+00:00", exit_code=code, duration_sec=0.5
            )
            task["status"] = status

    def wait_reads(self, n: int) -> None:
        # Let follow poll a few times between writes so it sees the file grow.
        while True:
            with self.lock:
                if self.reads >= n:
                    return
            threading.Event().wait(0.005)

    def settle(self) -> None:
        self.wait_reads(self.reads + 3)


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _follow_in_thread(
    run: _Run, out: io.BytesIO, task_id: Optional[str] = "t", **kwargs: Any
) -> threading.Thread:
    stream = kwargs.pop("stream", "stdout")

    def target() -> None:
        logs.follow(out, run.read, task_id, stream, poll_sec=0.01, **kwargs)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _join(thread: threading.Thread) -> None:
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_follow_streams_appended_bytes_until_success(tmp_path: Any) -> None:
    run = _Run(tmp_path)
    out = io.BytesIO()
    thread = _follow_in_thread(run, out)
    run.wait_reads(3)  # the log does not exist yet: follow waits
    path = run.state["tasks"]["t"]["stdout_path"]
    expected = b""
    run.start_attempt()
    with open(path, "ab") as f:
        for i in range(20):
            chunk = f"chunk {i}\n".encode() if i % 3 else b"\xff partial "
            f.write(chunk)
            f.flush()
            expected += chunk
            run.wait_reads(run.reads + 2)
        f.write(b"last words, no newline")
        expected += b"last words, no newline"
    run.end_attempt(status="SUCCESS", code=0)
    _join(thread)
    assert out.getvalue() == expected  # raw: nothing added


def test_follow_respects_tail_then_streams(tmp_path: Any) -> None:
    run = _Run(tmp_path, "RUNNING")
    path = run.state["tasks"]["t"]["stdout_path"]
    _append(path, b"old 1\nold 2\nold 3\n")
    out = io.BytesIO()
    thread = _follow_in_thread(run, out, tail=1)
    run.wait_reads(3)
    _append(path, b"new\n")
    run.settle()
    run.set("FAILED")
    _join(thread)
    assert out.getvalue() == b"old 3\nnew\n"


def test_follow_both_streams_switches_headers_and_ends_attempts(tmp_path: Any) -> None:
    run = _Run(tmp_path)
    task = run.state["tasks"]["t"]
    out = io.BytesIO()
    thread = _follow_in_thread(run, out, stream="both")
    run.start_attempt()
    _append(task["stdout_path"], b"out 1")
    run.settle()
    _append(task["stderr_path"], b"err 1\n")
    run.settle()
    _append(task["stdout_path"], b"out 2\n")
    run.settle()
    run.end_attempt()  # will be retried
    run.settle()
    # The retry writes before its attempt is recorded: those bytes must not be shown as
    # attempt 1's.
    _append(task["stdout_path"], b"retry out\n")
    run.settle()
    with run.lock:
        task["history"].append(_ended(2, _size(task["stdout_path"]) - 10, 6, ended_at=None))
        task["status"] = "RUNNING"
    run.settle()
    run.end_attempt(status="SUCCESS", code=0)
    _join(thread)
    assert out.getvalue().decode() == (
        "==> task t attempt 1/1 stdout <==\n"
        "out 1\n"
        "==> task t attempt 1/1 stderr <==\n"
        "err 1\n"
        "==> task t attempt 1/1 stdout <==\n"
        "out 2\n"
        "==> task t attempt 1/2: exit 1 after 0.5s <==\n"
        "\n"
        "==> task t attempt 2/2 stdout <==\n"
        "retry out\n"
        "==> task t attempt 2/2: exit 0 after 0.5s <==\n"
    )


def test_follow_returns_when_owner_is_gone(tmp_path: Any) -> None:
    run = _Run(tmp_path, "RUNNING")
    _append(run.state["tasks"]["t"]["stdout_path"], b"before the crash\n")
    run.state["owner_alive"] = False  # state still says RUNNING, like after a SIGKILL
    out = io.BytesIO()
    logs.follow(out, run.read, "t", "stdout", poll_sec=0.01)
    assert out.getvalue() == b"before the crash\n"


def test_follow_returns_when_run_is_over(tmp_path: Any) -> None:
    run = _Run(tmp_path, "PENDING")
    run.state["status"] = "CANCELED"  # the task will never start
    out = io.BytesIO()
    logs.follow(out, run.read, "t", "stderr", poll_sec=0.01)
    assert out.getvalue() == b""


def test_follow_stops_on_event(tmp_path: Any) -> None:
    run = _Run(tmp_path, "RUNNING")
    stop = threading.Event()
    out = io.BytesIO()
    thread = _follow_in_thread(run, out, stop=stop)
    run.wait_reads(3)
    assert thread.is_alive()
    stop.set()
    _join(thread)


def test_follow_unknown_task(tmp_path: Any) -> None:
    run = _Run(tmp_path)
    with pytest.raises(UsageError, match=r"unknown task 'x' in run R1"):
        logs.follow(io.BytesIO(), run.read, "x", "stdout", poll_sec=0.01)


def test_follow_every_task_prefixes_lines(tmp_path: Any) -> None:
    run = _Run(tmp_path, ids=("lint", "build", "deploy"))
    tasks = run.state["tasks"]
    out = io.BytesIO()
    thread = _follow_in_thread(run, out, task_id=None, stream="both")
    run.wait_reads(3)
    run.start_attempt("lint")
    run.start_attempt("build")
    _append(tasks["build"]["stdout_path"], b"compiling a.c\ncompil")
    run.settle()
    _append(tasks["lint"]["stderr_path"], b"warning: x\n")
    run.settle()
    _append(tasks["build"]["stdout_path"], b"ing b.c\n")  # the rest of a line
    run.settle()
    run.end_attempt("lint", status="SUCCESS", code=0)
    run.settle()
    _append(tasks["build"]["stdout_path"], b"no newline at the end")
    run.end_attempt("build", status="FAILED", code=2)
    run.set("SKIPPED", "deploy")
    tasks["deploy"]["skip_reason"] = "dependency_not_success"
    run.settle()
    assert thread.is_alive()  # every task is done, but the run is not over yet
    run.state["status"] = "FAILED"
    _join(thread)
    assert out.getvalue().decode() == (
        "build | compiling a.c\n"
        "lint | warning: x\n"
        "build | compiling b.c\n"
        "lint | ==> task lint attempt 1/1: exit 0 after 0.5s <==\n"
        "build | no newline at the end\n"
        "build | ==> task build attempt 1/1: exit 2 after 0.5s <==\n"
        "deploy | ==> task deploy: no attempts (SKIPPED: dependency_not_success) <==\n"
    )


def test_follow_with_timestamps(tmp_path: Any) -> None:
    run = _Run(tmp_path, ids=("a",))
    run.start_attempt("a")
    path = run.state["tasks"]["a"]["stdout_path"]
    _append(path, b"one\ntw")
    times = iter(range(1_000_000, 2_000_000))
    out = io.BytesIO()

    def clock() -> float:
        return float(next(times))

    thread = _follow_in_thread(run, out, task_id=None, timestamps=True, clock=clock)
    run.settle()
    _append(path, b"o\n")
    run.settle()
    run.end_attempt("a", status="SUCCESS", code=0)
    run.state["status"] = "SUCCESS"
    _join(thread)
    lines = out.getvalue().decode().splitlines()
    assert [line.split(" ", 3)[3] for line in lines[:2]] == ["one", "two"]
    first, second = (line.split(" ")[2] for line in lines[:2])
    assert first == second  # "two" is stamped when its first byte was read
    assert first.startswith("1970-01-1") and first.count(":") >= 2 and "." in first
    assert lines[2] == "a | ==> task a attempt 1/1: exit 0 after 0.5s <=="


def test_follow_of_every_task_keeps_memory_bounded(tmp_path: Any) -> None:
    run = _Run(tmp_path, "SUCCESS", ids=("big",))
    run.state["status"] = "SUCCESS"
    path = run.state["tasks"]["big"]["stdout_path"]
    with open(path, "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))  # 64 MiB and not one newline
    out = _Discard()
    tracemalloc.start()
    try:
        logs.follow(out, run.read, None, "stdout", poll_sec=0.01)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.size > 64 << 20
    assert peak < 8 * 1024 * 1024, peak
    os.unlink(path)


class _Discard(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)

    def writable(self) -> bool:
        return True
