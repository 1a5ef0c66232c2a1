"""orch.progress: plain lines for pipes, a live view on a real pseudo-terminal.

The live view is checked twice: as the bytes it writes, and as the screen those bytes leave
on a small terminal emulator (``Screen``, the few sequences orch writes), so "no garbage"
and "no line wider than the terminal" are asserted on what a person would see. One test
runs a real ``orch run`` with its stderr on a 40-column pty.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from conftest import REPO, Orch, orch_env

from orch import progress as progress_mod
from orch.progress import Progress, format_duration, make_progress

SGR = re.compile(r"\x1b\[[0-9;]*m")
SECRETS = {"API_TOKEN": "s3cr3t-value-1", "PASSWORD": "hunter2-value-2"}
RUN = "20261125_090000_a1b2c3"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- a run state with real logs, as the scheduler hands it over -----------------------------


def _attempt(n: int, duration: Optional[float], out: int = 0, err: int = 0) -> Dict[str, Any]:
    return {"attempt": n, "duration_sec": duration, "stdout_offset": out, "stderr_offset": err}


def make_state(tmp: Path) -> Dict[str, Any]:
    """build (ok), test (retried: its logs hold two attempts), deploy (skipped behind
    package, itself skipped behind test)."""
    logs = tmp / "logs"
    logs.mkdir()
    first_out = b"collecting...\nattempt one output\n"
    (logs / "test.out.log").write_bytes(first_out + b"collecting...\nFAILED test_x.py::y\n")
    (logs / "test.err.log").write_bytes(b"E   assert 1 == 2\n")
    # Written before stdout's last line: the live view shows the more recent stream's line.
    os.utime(logs / "test.err.log", (time.time() - 10, time.time() - 10))
    tasks: Dict[str, Any] = {}
    for tid, deps in (("build", []), ("test", ["build"]), ("package", ["test"])):
        tasks[tid] = {
            "status": "PENDING",
            "depends_on": deps,
            "stdout_path": str(logs / f"{tid}.out.log"),
            "stderr_path": str(logs / f"{tid}.err.log"),
            "history": [],
        }
    tasks["deploy"] = dict(tasks["package"], depends_on=["package", "build"])
    tasks["test"]["history"] = [_attempt(1, 1.0), _attempt(2, 1.0, out=len(first_out))]
    tasks["build"]["history"] = [_attempt(1, 1.234)]
    return {"run_id": RUN, "home": str(tmp / "home"), "tasks": tasks}


def _drive(p: Progress, clock: Clock, state: Optional[Dict[str, Any]] = None) -> None:
    """A small run: one success, one retried failure, two skips (one behind the other)."""
    tasks = state["tasks"] if state else {}
    p.run_started(RUN, 5, 1, state=state)
    p.task_started("build", 1)
    p.task_started("test", 1, 3)
    clock.now += 1.234
    p.tick()
    p.task_finished("build", "SUCCESS", 1, 1.234, "")
    p.task_retrying("test", 2, 1.0, "exit 1", 3)
    clock.now += 1.0
    p.tick()
    p.task_started("test", 2, 3)
    clock.now += 0.31
    if tasks:
        tasks["test"]["status"] = "FAILED"
        tasks["package"].update(status="SKIPPED", skip_reason="dependency_not_success")
        tasks["deploy"].update(status="SKIPPED", skip_reason="dependency_not_success")
    p.task_finished("test", "FAILED", 2, 2.54, "exit 1", 3)
    p.task_finished("package", "SKIPPED", 0, 0.0, "dependency_not_success")
    p.task_finished("deploy", "SKIPPED", 0, 0.0, "dependency_not_success")
    p.run_finished("FAILED", {"SUCCESS": 2, "FAILED": 1, "SKIPPED": 2}, 12.34, "/r/final_report.md")


# --- plain mode ---------------------------------------------------------------------------


def test_plain_mode_exact_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    clock = Clock()
    env = {"TERM": "xterm-256color", "ORCH_HOME": str(tmp_path / "home"), **SECRETS}
    _drive(make_progress(out, env, clock=clock), clock, make_state(tmp_path))
    assert out.getvalue().splitlines() == [
        f"run {RUN}: 5 tasks (1 already done)",
        "START build",
        "START test (attempt 1/3)",
        "[2/5] SUCCESS build (1.2s)",
        "RETRY test in 1.0s after exit 1 (attempt 2/3)",
        "START test (attempt 2/3)",
        # The time its two attempts ran (2.0 s), not 2.54 s from first start to end.
        "[3/5] FAILED test (exit 1, attempt 2/3, 2.0s in 2 attempts)",
        # The failed attempt's own output (its offsets), both streams, and where the rest is.
        "  stdout| collecting...",
        "  stdout| FAILED test_x.py::y",
        "  stderr| E   assert 1 == 2",
        f"  all of it: orch logs {RUN} --task test",
        # deploy's direct dependency was skipped too: the root failure is named.
        "[4/5] SKIPPED package (root failure: test)",
        "[5/5] SKIPPED deploy (root failure: test)",
        "run FAILED in 12.3s: 2 SUCCESS, 1 FAILED, 2 SKIPPED",
        "  failed: test",
        "  skipped: package, deploy",
        "report: /r/final_report.md",
    ]
    assert "\x1b" not in out.getvalue()


def test_plain_mode_logs_hint_names_the_home_when_it_is_not_the_default(tmp_path: Path) -> None:
    out = io.StringIO()
    clock = Clock()
    _drive(make_progress(out, {}, clock=clock), clock, make_state(tmp_path))
    assert f"  all of it: orch logs {RUN} --task test --home {tmp_path / 'home'}\n" in (
        out.getvalue()
    )


def test_plain_mode_other_outcomes_stay_one_line_each() -> None:
    out = io.StringIO()
    p = make_progress(out, {})
    p.run_started("R2", 3, 0)
    p.task_finished("slow", "SKIPPED", 0, 0.0, "condition_not_met")
    p.task_finished("odd", "FAILED", 1, 0.0, "cannot start 'x':\nNo such file\r")
    p.task_started("long", 4)
    p.task_finished("long", "CANCELED", 4, 125.0, "canceled")
    p.run_finished("CANCELED", {"FAILED": 1, "CANCELED": 1, "SKIPPED": 1}, 4000.0, "/r/x.md")
    assert out.getvalue() == (
        "run R2: 3 tasks\n"
        "[1/3] SKIPPED slow (condition_not_met)\n"
        "[2/3] FAILED odd (cannot start 'x': No such file, 0.0s)\n"
        "START long (attempt 4)\n"
        "[3/3] CANCELED long (canceled, attempt 4, 2m05s)\n"
        "run CANCELED in 1h06m: 1 FAILED, 1 SKIPPED, 1 CANCELED\n"
        "  failed: odd\n"
        "  skipped: slow\n"
        "  canceled: long\n"
        "report: /r/x.md\n"
    )


def test_one_wording_for_attempts_and_no_2_of_2_after_a_resume() -> None:
    out = io.StringIO()
    clock = Clock()
    p = make_progress(out, {}, clock=clock)
    p.run_started("R", 2, 0)
    # resume --failed-only of a `retries: 0` task: its one attempt of this execution is #2.
    p.task_started("once", 2, 2)
    p.task_finished("once", "FAILED", 2, 1.0, "exit 1")
    # A `retries: 2` task resumed after 3 attempts: attempts 4, 5, 6 of the run.
    p.task_started("again", 4, 6)
    p.task_retrying("again", 5, 0.5, "exit 1", 6)
    p.task_started("again", 5, 6)
    p.task_finished("again", "SUCCESS", 5, 2.0, "")
    lines = out.getvalue().splitlines()
    assert lines[1:] == [
        "START once (attempt 2)",
        "[1/2] FAILED once (exit 1, attempt 2, 1.0s)",
        "START again (attempt 4/6)",
        "RETRY again in 0.5s after exit 1 (attempt 5/6)",
        "START again (attempt 5/6)",
        "[2/2] SUCCESS again (attempt 5/6, 2.0s)",
    ]
    assert " of " not in out.getvalue()


def test_durations_are_the_attempts_own_not_the_waits_between_them(tmp_path: Path) -> None:
    out = io.StringIO()
    clock = Clock()
    state = {"tasks": {"t": {"history": [_attempt(n, 1.0) for n in (1, 2, 3)]}}}
    p = make_progress(out, {}, clock=clock)
    p.run_started("R", 1, 0, state=state)
    for n in (1, 2, 3):
        p.task_started("t", n, 3)
    # 3 one-second attempts with backoffs between them: 10.2 s from first start to end.
    p.task_finished("t", "SUCCESS", 3, 10.2, "", 3)
    assert out.getvalue().splitlines()[-1] == "[1/1] SUCCESS t (attempt 3/3, 3.0s in 3 attempts)"


def test_an_allowed_failure_says_so_and_is_not_counted_failed() -> None:
    out = io.StringIO()
    state: Dict[str, Any] = {"tasks": {"lint": {"allowed_failure": True, "history": []}}}
    p = make_progress(out, {})
    p.run_started("R", 1, 0, state=state)
    p.task_started("lint", 1)
    p.task_finished("lint", "FAILED", 1, 0.5, "exit 1")
    assert out.getvalue().splitlines()[2] == "[1/1] FAILED lint (allowed failure, exit 1, 0.5s)"
    assert isinstance(p, progress_mod._Reporter) and p._failed == 0
    state["tasks"]["notify"] = {"skip_reason": "condition_not_met"}
    p.task_finished("notify", "SKIPPED", 0, 0.0, "condition_not_met")
    p.run_finished("SUCCESS", {"FAILED": 1, "SKIPPED": 1}, 1.0, "r.md")
    # The run succeeded: neither is named as a failure or a skip that matters.
    assert out.getvalue().splitlines()[-4:] == [
        "run SUCCESS in 1.0s: 1 FAILED, 1 SKIPPED",
        "  allowed failures: lint",
        "  skipped, condition not met: notify",
        "report: r.md",
    ]


def test_cancel_says_what_it_waits_for_and_groups_what_never_started() -> None:
    out = io.StringIO()
    p = make_progress(out, {})
    p.run_started("R", 8, 0)
    p.task_started("a", 1)
    p.task_started("b", 1)
    for tid in ("c", "d", "e", "f", "g", "h"):
        p.task_finished(tid, "CANCELED", 0, 0.0, "run_canceled")
    p.run_stopping(2, 5.0)
    p.run_killing(2)
    p.task_finished("a", "CANCELED", 1, 3.0, "canceled")
    assert out.getvalue().splitlines()[3:] == [
        "stopping: waiting up to 5s for 2 tasks; Ctrl-C again to kill",
        "[6/8] CANCELED 6 waiting tasks: c, d, e, f, g, +1 more",
        "stopping: killing 2 tasks now (SIGKILL)",
        "[7/8] CANCELED a (canceled, 3.0s)",
    ]


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 0.04, 59.94, 60, 3599, 3600, 7322)] == [
        "0.0s",
        "0.0s",
        "59.9s",
        "1m00s",
        "59m59s",
        "1h00m",
        "2h02m",
    ]


def test_base_progress_reports_nothing() -> None:
    p = Progress()
    p.run_started("R", 1, 0, state={})
    p.task_started("a", 1)
    p.task_waiting("a", "a slot")
    p.task_finished("a", "SUCCESS", 1, 0.1, "")
    p.run_stopping(1, 5.0)
    p.run_killing(1)
    p.run_finished("SUCCESS", {"SUCCESS": 1}, 0.1, "r.md")


def test_closed_or_broken_stream_never_stops_the_run() -> None:
    closed = io.StringIO()
    closed.close()
    p = make_progress(closed, {})
    p.run_started("R", 1, 0)
    p.task_finished("a", "SUCCESS", 1, 0.1, "")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    pipe = open(write_fd, "w")  # noqa: SIM115 - closed below, where EPIPE is expected
    p = make_progress(pipe, {})
    p.run_started("R", 1, 0)  # EPIPE: swallowed
    p.task_finished("a", "SUCCESS", 1, 0.1, "")
    p.run_finished("SUCCESS", {"SUCCESS": 1}, 0.1, "r.md")
    with contextlib.suppress(BrokenPipeError):  # the unflushed text has nowhere to go
        pipe.close()
    assert pipe.closed


def test_unencodable_text_is_escaped_not_fatal() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)
    p = make_progress(out, {})
    p.run_finished("SUCCESS", {"SUCCESS": 1}, 1.0, "/home/j\u00fcrgen/final_report.md")
    p.run_started("R", 1, 0)
    assert raw.getvalue().decode() == (
        "run SUCCESS in 1.0s: 1 SUCCESS\nreport: /home/j\\xfcrgen/final_report.md\nrun R: 1 task\n"
    )


# --- a terminal: a real pty, and a small emulator of what reaches the screen -----------------


class Terminal:
    """A pty whose slave end is the progress stream; a thread collects what reaches the master."""

    def __init__(self, columns: int, rows: int = 24) -> None:
        self.master, slave = pty.openpty()
        self.slave = slave
        self.resize(columns, rows)
        self.stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed in output()
        self.chunks: List[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def resize(self, columns: int, rows: int = 24) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the slave side is closed and drained
                return
            if not data:
                return
            self.chunks.append(data)

    def output(self) -> str:
        self.stream.close()
        self.reader.join(timeout=10)
        os.close(self.master)
        return b"".join(self.chunks).decode()


def _cells(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


class Screen:
    """Just enough of a VT100 for what orch writes: text with autowrap, CR, LF (scrolling
    into a history), CUU (``ESC[nA``), EL (``ESC[K``, ``ESC[2K``), ED (``ESC[J``), SGR."""

    def __init__(self, columns: int, rows: int = 24) -> None:
        self.w, self.h = columns, rows
        self.rows: List[List[str]] = [[] for _ in range(rows)]
        self.history: List[str] = []
        self.x = self.y = 0
        self.pending = False  # the cursor waits in the margin after the last column
        self.wraps = 0

    def feed(self, text: str) -> Screen:
        i = 0
        while i < len(text):
            match = re.match(r"\x1b\[([0-9;]*)([A-Za-z])", text[i:])
            if match:
                self._csi(match.group(1), match.group(2))
                i += match.end()
                continue
            if text[i] == "\x1b":  # an escape cut short (the screen was looked at mid-write)
                return self
            self._char(text[i])
            i += 1
        return self

    def _csi(self, params: str, final: str) -> None:
        n = int(params) if params.isdigit() else 0
        if final == "A":
            self.y = max(0, self.y - max(n, 1))
            self.pending = False
        elif final == "K":
            row = self.rows[self.y]
            del row[0 if n == 2 else self.x :]
        elif final == "J":
            del self.rows[self.y][self.x :]
            for y in range(self.y + 1, self.h):
                self.rows[y] = []
        # m (colours) and anything else: no effect on the text

    def _char(self, char: str) -> None:
        if char == "\r":
            self.x, self.pending = 0, False
        elif char == "\n":
            self._down()
            self.pending = False
        else:
            if self.pending:
                self.wraps += 1
                self.x = 0
                self._down()
                self.pending = False
            row = self.rows[self.y]
            row.extend(" " * (self.x - len(row)))
            row[self.x : self.x + 1] = [char] + [""] * (_cells(char) - 1)
            self.x += _cells(char)
            if self.x >= self.w:
                self.x, self.pending = self.w - 1, True

    def _down(self) -> None:
        if self.y == self.h - 1:
            self.history.append("".join(self.rows.pop(0)))
            self.rows.append([])
        else:
            self.y += 1

    def lines(self) -> List[str]:
        shown = ["".join(row).rstrip() for row in self.rows]
        while shown and not shown[-1]:
            shown.pop()
        return shown

    def everything(self) -> List[str]:
        return [line.rstrip() for line in self.history] + self.lines()


def _width(line: str) -> int:
    return sum(_cells(c) for c in line)


def _live(columns: int, env: Dict[str, str], rows: int = 24) -> Tuple[Terminal, Progress, Clock]:
    term = Terminal(columns, rows)
    clock = Clock()
    assert term.stream.isatty()
    return term, make_progress(term.stream, env, clock=clock), clock


def test_screen_emulator_basics() -> None:
    screen = Screen(10, 3).feed("abc\r\nlonger than ten\r\n\x1b[2Axy\x1b[K")
    assert screen.lines() == ["xy", "n ten"]
    assert screen.history == ["abc"] and screen.wraps == 1


def test_live_view_keeps_every_transition_and_leaves_no_block_behind(tmp_path: Path) -> None:
    term, p, clock = _live(80, {"TERM": "xterm", **SECRETS})
    _drive(p, clock, make_state(tmp_path))
    text = term.output()
    # Wide enough not to wrap the long permanent lines; the block itself never wraps at 80.
    screen = Screen(200).feed(text)
    assert screen.everything() == [
        "[2/5] SUCCESS build (1.2s)",
        "RETRY test in 1.0s after exit 1 (attempt 2/3)",
        "[3/5] FAILED test (exit 1, attempt 2/3, 2.0s in 2 attempts)",
        "  stdout| collecting...",
        "  stdout| FAILED test_x.py::y",
        "  stderr| E   assert 1 == 2",
        f"  all of it: orch logs {RUN} --task test --home {tmp_path / 'home'}",
        "[4/5] SKIPPED package (root failure: test)",
        "[5/5] SKIPPED deploy (root failure: test)",
        "run FAILED in 12.3s: 2 SUCCESS, 1 FAILED, 2 SKIPPED",
        "  failed: test",
        "  skipped: package, deploy",
        "report: /r/final_report.md",
    ]
    # Permanent lines are coloured; the block was there while the run went on.
    assert "\x1b[31mFAILED\x1b[0m test" in text
    assert "\x1b[K  test  1.2s  attempt 1/3  FAILED test_x.py::y\x1b[K" in SGR.sub("", text)
    for secret in SECRETS.values():
        assert secret not in text


def test_live_view_shows_the_running_tasks_last_line_and_a_count_of_the_hidden(
    tmp_path: Path,
) -> None:
    """At 40 columns (where once no running task was visible): every line fits, the running
    tasks show their elapsed time and last output line, and ``+N more`` counts the rest."""
    state: Dict[str, Any] = {"tasks": {}}
    for i in range(14):
        tid = f"agent-{i:02d}"
        out, err = tmp_path / f"{tid}.out", tmp_path / f"{tid}.err"
        out.write_text(f"old attempt line\nstep {i}: 翻訳しています、お待ちください\n")
        err.write_text("")
        state["tasks"][tid] = {
            "stdout_path": str(out),
            "stderr_path": str(err),
            "history": [_attempt(1, None, out=len("old attempt line\n"))],
        }
    term, p, clock = _live(40, {"TERM": "xterm"}, rows=24)
    p.run_started("R", 20, 0, state=state)
    for tid in state["tasks"]:
        p.task_started(tid, 1)
        clock.now += 0.2
    p.task_waiting("agent-13", "pool llm")  # running: ignored
    p.task_retrying("late", 2, 3.0, "exit 1", 3)
    clock.now += 0.5
    p.tick()
    screen = Screen(40).feed(term.output())
    shown = screen.lines()
    block = shown[shown.index(next(s for s in shown if s.startswith("[0/20]"))) :]
    assert all(_width(line) <= 39 for line in block), block
    assert block[0] == "[0/20] 3.3s  14 running  1 waiting"
    assert len(block) == 1 + 10  # rows // 2 - 1 task lines, the last of them the count
    # The attempt's own last line (not the previous attempt's), cut by display width.
    assert block[1] == "  agent-00 3.3s  step 0: 翻訳していま…"
    assert _width(block[1]) == 38  # one more wide character would take 40 columns
    assert block[-1] == "  +6 more"
    assert all("old attempt line" not in line for line in block)


def test_a_retry_waiting_for_a_slot_says_so_instead_of_retry_in_0s() -> None:
    term, p, clock = _live(80, {"TERM": "xterm"})
    p.run_started("R", 2, 0)
    p.task_started("hog", 1)
    p.task_started("flaky", 1, 3)
    p.task_retrying("flaky", 2, 2.0, "exit 1", 3)
    clock.now += 1.0
    p.tick()
    clock.now += 1.5  # the backoff is over; the only slot is taken by "hog"
    p.task_waiting("flaky", "a slot")
    for _ in range(5):
        clock.now += 0.5
        p.tick()
    p.task_waiting("fix", "pool llm")
    clock.now += 0.5
    p.tick()
    lines = Screen(80).feed(term.output()).lines()
    assert lines[-3:] == [
        "  hog   5.5s",
        "  flaky  waiting for a slot (attempt 2/3)",
        "  fix    waiting for pool llm",
    ]
    frames = SGR.sub("", b"".join(term.chunks).decode())
    assert "retry in 1.0s (attempt 2/3)" in frames
    assert "retry in 0.0s" not in frames


def test_a_narrower_window_is_cleared_at_its_new_width() -> None:
    term, p, clock = _live(160, {"TERM": "xterm"})
    p.run_started("R", 4, 0)
    for tid in ("a" * 60, "b" * 60, "c" * 60):
        p.task_started(tid, 1)
    for _ in range(2):
        clock.now += 1.0
        p.tick()
    # Each block line is about 70 columns: at 40 a reflowing terminal shows it on 2 rows.
    term.resize(40)
    clock.now += 1.0
    p.tick()
    text = term.output()
    # At 160 columns the block took 4 rows: up 3 to its first. At 40 a reflowing terminal
    # holds it on 1 + 3 * 2 rows: up 6, then the 3 rows left below the new block are erased.
    assert re.findall(r"\r\x1b\[(\d+)A", text) == ["3", "6"]
    assert text.endswith("\r\n\x1b[K" * 3 + "\x1b[3A")
    assert "  aaaaaaaaaaaa… 3.0s" in text  # the new block is cut for 40 columns


def test_redraws_are_throttled_and_bursts_cost_one_block() -> None:
    term, p, clock = _live(80, {"TERM": "xterm"})
    p.run_started("R", 3000, 0)
    for i in range(1000):
        p.task_started(f"t{i}", 1)
        clock.now += 0.0001
    for i in range(1000):
        p.task_finished(f"t{i}", "SKIPPED", 0, 0.0, "fail_fast")
    clock.now += 1.0
    p.tick()
    text = term.output()
    headers = re.findall(r"\[\d+/3000\] \d", SGR.sub("", text))
    assert len(headers) < 10, len(headers)
    assert Screen(80).feed(text).lines()[-1].startswith("[1000/3000] 1.1s")


def test_output_lines_are_read_at_most_every_half_second(tmp_path: Path, monkeypatch: Any) -> None:
    reads: List[str] = []
    real = progress_mod._fmt.read_tail

    def counting(path: Optional[str], *args: Any, **kw: Any) -> List[str]:
        reads.append(str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(progress_mod._fmt, "read_tail", counting)
    out = tmp_path / "a.out"
    out.write_text("x\n")
    state = {"tasks": {"a": {"stdout_path": str(out), "stderr_path": "", "history": [{}]}}}
    term, p, clock = _live(80, {"TERM": "xterm"})
    p.run_started("R", 1, 0, state=state)
    p.task_started("a", 1)
    for i in range(20):  # 2 s of redraws every 0.1 s, the log growing all along
        clock.now += 0.1
        with out.open("a") as f:
            f.write(f"line {i}\n")
        p.tick()
    term.output()
    assert 4 <= len(reads) <= 6, reads


def test_no_color_counts_only_when_not_empty() -> None:
    for value, coloured in (("", True), ("1", False)):
        term, p, clock = _live(80, {"TERM": "xterm", "NO_COLOR": value})
        _drive(p, clock)
        text = term.output()
        assert "\x1b[K" in text  # still live
        assert bool(SGR.search(text)) is coloured, value
        assert "[3/5] " in text


def test_dumb_terminal_gets_plain_lines() -> None:
    term, p, clock = _live(80, {"TERM": "dumb", **SECRETS})
    _drive(p, clock)
    text = term.output().replace("\r\n", "\n")
    assert "\x1b" not in text
    assert "\r" not in text
    assert text.splitlines()[3] == "[2/5] SUCCESS build (1.2s)"


def test_progress_never_prints_env_values(tmp_path: Path) -> None:
    values = {f"K{i}": f"secret-{i}-value" for i in range(5)}
    env: Dict[str, Any] = {"TERM": "xterm", **values}
    outputs = []
    for mode in ("plain", "live"):
        clock = Clock()
        (tmp_path / mode).mkdir()
        state = make_state(tmp_path / mode)
        if mode == "plain":
            buf = io.StringIO()
            _drive(make_progress(buf, env, clock=clock), clock, state)
            outputs.append(buf.getvalue())
        else:
            term, p, clock = _live(80, env)
            _drive(p, clock, state)
            outputs.append(term.output())
    for text in outputs:
        assert "build" in text
        for value in values.values():
            assert value not in text


# --- a real run at 40 columns ------------------------------------------------------------------


def test_real_run_live_view_at_40_columns(orch: Orch) -> None:
    agent = REPO / "tools" / "fake_agent.py"
    tasks = "\n".join(
        f"  - id: agent_{i:02d}\n"
        f'    cmd: ["python3", "{agent}", "build", "--sleep", "2.5", "--heartbeat", "0.3"]'
        for i in range(12)
    )
    plan = orch.plan(f"tasks:\n{tasks}\n  - id: broken\n    cmd: [sh, -c, 'echo oops; exit 3']\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 40, 0, 0))
    env = orch_env({"TERM": "xterm"})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orch",
            "run",
            plan,
            "--home",
            str(orch.home),
            "--max-parallel",
            "13",
        ],
        cwd=str(orch.workdir),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: List[bytes] = []
    snapshots: List[int] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        snapshots.append(len(b"".join(chunks)))
    assert proc.wait(timeout=60) == 3
    assert proc.stdout is not None
    proc.stdout.close()
    reader.join(timeout=10)
    os.close(master)
    data = b"".join(chunks)
    raw = data.decode("utf-8", "replace")
    # The screen as a person saw it, at each moment it was looked at.
    seen = []
    for size in snapshots:
        shown = Screen(40, 20).feed(data[:size].decode("utf-8", "replace")).lines()
        headers = [i for i, line in enumerate(shown) if re.match(r"\[\d+/13\] \d", line)]
        if not headers:
            continue
        block = shown[headers[-1] :]
        # Every line of the block fits (a wrapped one would start a row without its indent).
        assert all(line.startswith("  ") and _width(line) <= 39 for line in block[1:]), block
        seen.append(block)
    # Mid-run: running agents with their elapsed time and last line, and a count of the rest.
    assert any(
        re.fullmatch(r"  \+\d+ more", block[-1])
        and any(re.match(r"  agent_\d\d +\d\.\ds  \[fake-agent\] ", line) for line in block)
        for block in seen
    ), seen
    everything = Screen(40, 200).feed(raw).everything()
    assert "  stdout| oops" in everything
    # No piece of a status block is left anywhere, on the screen or in its scrollback.
    assert not any(re.match(r"\[\d+/13\] \d", line) for line in everything), everything
    assert "report: " in "".join(everything[-4:])  # its path wraps at 40 columns
