"""orch.logs on real files: tails, attempt slices, sections, errors and --follow."""

from __future__ import annotations

import io
import os
import random
import threading
import tracemalloc
from typing import Any, Dict, List, Optional

import pytest

from orch import logs
from orch.errors import StateError, UsageError

MARK = "=== orch: task {} attempt {} started 2026-11-25T09:00:00+00:00 ===\n"


def _task(tmp: Any, task_id: str, status: str = "SUCCESS") -> Dict[str, Any]:
    return {
        "status": status,
        "attempts": 0,
        "history": [],
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


def _attempts(state: Dict[str, Any], task_id: str, outs: List[bytes], errs: List[bytes]) -> None:
    """Write the logs of several attempts as the runner does, recording offsets in history."""
    task = state["tasks"][task_id]
    out_off = err_off = 0
    with open(task["stdout_path"], "wb") as fo, open(task["stderr_path"], "wb") as fe:
        for n, (out, err) in enumerate(zip(outs, errs), start=1):
            mark = MARK.format(task_id, n).encode()
            task["history"].append(
                {"attempt": n, "stdout_offset": out_off, "stderr_offset": err_off}
            )
            fo.write(mark + out)
            fe.write(mark + err)
            out_off += len(mark) + len(out)
            err_off += len(mark) + len(err)
    task["attempts"] = len(outs)


def _render(state: Dict[str, Any], ids: List[str], stream: str, tail: Optional[int] = None,
            attempt: Optional[int] = None) -> bytes:  # fmt: skip
    buf = io.BytesIO()
    logs.write_logs(buf, state, ids, stream, tail, attempt)
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
    size = len(data)
    ranges = [logs.attempt_range(task, "stdout", n, size) for n in (1, 2, 3)]
    assert [data[a:b] for a, b in ranges] == [
        MARK.format("t", 1).encode() + b"o1\n",
        MARK.format("t", 2).encode() + b"o2a\no2b\n",
        MARK.format("t", 3).encode() + b"o3",
    ]
    assert logs.attempt_range(task, "stdout", None, size) == (0, size)
    with open(task["stderr_path"], "rb") as f:
        err = f.read()
    a, b = logs.attempt_range(task, "stderr", 2, len(err))
    assert err[a:b] == MARK.format("t", 2).encode()


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


# --- write_logs ---------------------------------------------------------------------------


def test_single_task_single_stream_has_no_header(tmp_path: Any) -> None:
    state = _state(tmp_path, "build")
    _attempts(state, "build", [b"built\n"], [b"warn\n"])
    assert _render(state, ["build"], "stderr") == MARK.format("build", 1).encode() + b"warn\n"


def test_both_streams_and_several_tasks_get_headers(tmp_path: Any) -> None:
    state = _state(tmp_path, "a", "b")
    _attempts(state, "a", [b"a-out"], [b"a-err\n"])  # stdout without final newline
    _attempts(state, "b", [b"b-out\n"], [b""])
    got = _render(state, [], "both", tail=1).decode()
    assert got == (
        "==> a stdout <==\n"
        "a-out\n"
        "\n==> a stderr <==\n"
        "a-err\n"
        "\n==> b stdout <==\n"
        "b-out\n"
        "\n==> b stderr <==\n" + MARK.format("b", 1)
    )
    got = _render(state, ["b", "a"], "stdout", tail=1).decode()
    assert got == "==> b stdout <==\nb-out\n\n==> a stdout <==\na-out"


def test_attempt_with_tail_and_bytes_unchanged(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    _attempts(state, "t", [b"1a\n1b\n", b"\xff2a\r\n2b\n\x00", b"3\n"], [b"", b"", b""])
    assert _render(state, ["t"], "stdout", attempt=2) == (
        MARK.format("t", 2).encode() + b"\xff2a\r\n2b\n\x00"
    )
    assert _render(state, ["t"], "stdout", tail=2, attempt=2) == b"2b\n\x00"
    assert _render(state, ["t"], "stdout", tail=1, attempt=1) == b"1b\n"
    assert _render(state, ["t"], "stdout", tail=0) == b""


def test_task_not_started_prints_nothing(tmp_path: Any) -> None:
    state = _state(tmp_path, "a", "later")
    state["tasks"]["later"]["status"] = "PENDING"
    _attempts(state, "a", [b"x\n"], [b""])
    assert _render(state, ["later"], "stdout") == b""
    assert _render(state, ["later", "a"], "stdout", tail=5).decode() == (
        "==> later stdout <==\n\n==> a stdout <==\n" + MARK.format("a", 1) + "x\n"
    )


def test_log_path_falls_back_to_run_dir(tmp_path: Any) -> None:
    state = _state(tmp_path, "t")
    del state["tasks"]["t"]["stdout_path"]
    (tmp_path / "logs" / "t.out.log").write_bytes(b"hello\n")
    assert _render(state, ["t"], "stdout") == b"hello\n"


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


# --- follow -------------------------------------------------------------------------------


class _Run:
    """A run whose task a background thread drives, as the scheduler would."""

    def __init__(self, tmp: Any, task_status: str = "PENDING") -> None:
        self.state = _state(tmp, "t")
        self.state["status"] = "RUNNING"
        self.state["tasks"]["t"]["status"] = task_status
        self.lock = threading.Lock()
        self.reads = 0

    def read(self) -> Dict[str, Any]:
        with self.lock:
            self.reads += 1
            return {
                **self.state,
                "tasks": {k: dict(v) for k, v in self.state["tasks"].items()},
            }

    def set(self, status: str) -> None:
        with self.lock:
            self.state["tasks"]["t"]["status"] = status

    def wait_reads(self, n: int) -> None:
        # Let follow poll a few times between writes so it sees the file grow.
        while True:
            with self.lock:
                if self.reads >= n:
                    return
            threading.Event().wait(0.005)


def _follow_in_thread(run: _Run, out: io.BytesIO, **kwargs: Any) -> threading.Thread:
    def target() -> None:
        logs.follow(out, run.read, "t", kwargs.pop("stream", "stdout"), poll_sec=0.01, **kwargs)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_follow_streams_appended_bytes_until_success(tmp_path: Any) -> None:
    run = _Run(tmp_path)
    out = io.BytesIO()
    thread = _follow_in_thread(run, out)
    run.wait_reads(3)  # the log does not exist yet: follow waits
    path = run.state["tasks"]["t"]["stdout_path"]
    expected = b""
    run.set("RUNNING")
    with open(path, "ab") as f:
        for i in range(20):
            chunk = f"chunk {i}\n".encode() if i % 3 else b"\xff partial "
            f.write(chunk)
            f.flush()
            expected += chunk
            run.wait_reads(run.reads + 2)
        f.write(b"last words, no newline")
        expected += b"last words, no newline"
    run.set("SUCCESS")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert out.getvalue() == expected


def test_follow_respects_tail_then_streams(tmp_path: Any) -> None:
    run = _Run(tmp_path, "RUNNING")
    path = run.state["tasks"]["t"]["stdout_path"]
    with open(path, "wb") as f:
        f.write(b"old 1\nold 2\nold 3\n")
    out = io.BytesIO()
    thread = _follow_in_thread(run, out, tail=1)
    run.wait_reads(2)
    with open(path, "ab") as f:
        f.write(b"new\n")
    run.set("FAILED")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert out.getvalue() == b"old 3\nnew\n"


def test_follow_both_streams_switches_headers(tmp_path: Any) -> None:
    run = _Run(tmp_path, "RUNNING")
    task = run.state["tasks"]["t"]
    out = io.BytesIO()
    thread = _follow_in_thread(run, out, stream="both")
    run.wait_reads(2)
    with open(task["stdout_path"], "ab") as f:
        f.write(b"out 1")
    run.wait_reads(run.reads + 2)
    with open(task["stderr_path"], "ab") as f:
        f.write(b"err 1\n")
    run.wait_reads(run.reads + 2)
    run.set("SUCCESS")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert out.getvalue() == b"==> t stdout <==\nout 1\n\n==> t stderr <==\nerr 1\n"


def test_follow_returns_when_owner_is_gone(tmp_path: Any) -> None:
    run = _Run(tmp_path, "RUNNING")
    with open(run.state["tasks"]["t"]["stdout_path"], "wb") as f:
        f.write(b"before the crash\n")
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
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_follow_unknown_task(tmp_path: Any) -> None:
    run = _Run(tmp_path)
    with pytest.raises(UsageError, match=r"unknown task 'x' in run R1"):
        logs.follow(io.BytesIO(), run.read, "x", "stdout", poll_sec=0.01)
