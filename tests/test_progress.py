"""orch.progress: plain lines for pipes, a live view on a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pty
import re
import struct
import termios
import threading
from typing import Any, Dict, List, Tuple

from orch.progress import Progress, format_duration, make_progress

SGR = re.compile(r"\x1b\[[0-9;]*m")
SECRETS = {"API_TOKEN": "s3cr3t-value-1", "PASSWORD": "hunter2-value-2"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drive(p: Progress, clock: Clock) -> None:
    """A small run: one success, one retried failure, one skip."""
    p.run_started("R1", 4, 1)
    p.task_started("build", 1)
    p.task_started("test", 1, 3)
    clock.now += 1.234
    p.tick()
    p.task_finished("build", "SUCCESS", 1, 1.234, "exit 0")
    p.task_retrying("test", 2, 1.0, "exit 1", 3)
    clock.now += 1.0
    p.tick()
    p.task_started("test", 2, 3)
    clock.now += 0.31
    p.task_finished("test", "FAILED", 2, 0.31, "exit 1", 3)
    p.task_finished("deploy", "SKIPPED", 0, 0.0, "dependency_not_success")
    p.run_finished("FAILED", {"SUCCESS": 2, "FAILED": 1, "SKIPPED": 1}, 12.34, "/r/final_report.md")


# --- plain mode ---------------------------------------------------------------------------


def test_plain_mode_exact_lines() -> None:
    out = io.StringIO()
    clock = Clock()
    _drive(make_progress(out, {"TERM": "xterm-256color", **SECRETS}, clock=clock), clock)
    assert out.getvalue().splitlines() == [
        "run R1: 4 tasks (1 already done)",
        "START build (attempt 1)",
        "START test (attempt 1/3)",
        "[2/4] SUCCESS build (1.2s)",
        "RETRY test in 1.0s after exit 1 (attempt 2 of 3)",
        "START test (attempt 2/3)",
        "[3/4] FAILED test (exit 1, attempt 2/3, 0.3s)",
        "[4/4] SKIPPED deploy (dependency_not_success)",
        "run FAILED in 12.3s: 2 SUCCESS, 1 FAILED, 1 SKIPPED",
        "report: /r/final_report.md",
    ]
    assert "\x1b" not in out.getvalue()


def test_plain_mode_other_outcomes_stay_one_line_each() -> None:
    out = io.StringIO()
    p = make_progress(out, {})
    p.run_started("R2", 3, 0)
    p.task_finished("slow", "FAILED", 1, 5.02, "timed out after 5s")
    p.task_finished("odd", "FAILED", 1, 0.0, "cannot start 'x':\nNo such file\r")
    p.task_finished("long", "CANCELED", 4, 125.0, "signal 15")
    p.run_finished("CANCELED", {"FAILED": 2, "CANCELED": 1, "SUCCESS": 0}, 4000.0, "/r/x.md")
    assert out.getvalue() == (
        "run R2: 3 tasks\n"
        "[1/3] FAILED slow (timed out after 5s, 5.0s)\n"
        "[2/3] FAILED odd (cannot start 'x': No such file , 0.0s)\n"
        "[3/3] CANCELED long (signal 15, attempt 4, 2m05s)\n"
        "run CANCELED in 1h06m: 2 FAILED, 1 CANCELED\n"
        "report: /r/x.md\n"
    )


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
    p.run_started("R", 1, 0)
    p.task_started("a", 1)
    p.task_finished("a", "SUCCESS", 1, 0.1, "")
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


# --- live mode on a real pseudo-terminal --------------------------------------------------


class Terminal:
    """A pty whose slave end is the progress stream; a thread collects what reaches the master."""

    def __init__(self, columns: int) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed in output()
        self.chunks: List[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

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
        # The line discipline turns "\n" into "\r\n"; undo it to compare with what was written.
        return b"".join(self.chunks).decode().replace("\r\n", "\n")


def _live(columns: int, env: Dict[str, str]) -> Tuple[Terminal, Progress, Clock]:
    term = Terminal(columns)
    clock = Clock()
    assert term.stream.isatty()
    return term, make_progress(term.stream, env, clock=clock), clock


def _status_lines(text: str) -> List[str]:
    """What each in-place rewrite showed (the text after each clear, up to the next one)."""
    return [s for s in text.split("\r\x1b[K")[1:] if "\n" not in s]


def test_live_mode_rewrites_one_line_and_keeps_failures() -> None:
    term, p, clock = _live(80, {"TERM": "xterm", **SECRETS})
    _drive(p, clock)
    text = term.output()
    statuses = _status_lines(text)
    assert "[1/4] 1.2s | running: build (1.2s), test (1.2s)" in statuses
    assert "[2/4] 2.2s | waiting: test (retry in 0.0s)" in statuses
    # Failures and retries become permanent lines (cleared status line, then text, newline).
    assert "\r\x1b[K\x1b[33mRETRY\x1b[0m test in 1.0s after exit 1 (attempt 2 of 3)\n" in text
    assert "\r\x1b[K[3/4] \x1b[31mFAILED\x1b[0m test (exit 1, attempt 2/3, 0.3s)\n" in text
    # Successes and skips only move the counter.
    assert "SUCCESS build" not in text
    assert "SKIPPED deploy" not in text
    # The status line is cleared before the summary, which ends the output.
    assert text.endswith(
        "\r\x1b[Krun \x1b[31mFAILED\x1b[0m in 12.3s: 2 \x1b[32mSUCCESS\x1b[0m, "
        "1 \x1b[31mFAILED\x1b[0m, 1 \x1b[33mSKIPPED\x1b[0m\nreport: /r/final_report.md\n"
    )
    for secret in SECRETS.values():
        assert secret not in text


def test_live_status_line_is_truncated_to_terminal_width() -> None:
    term, p, clock = _live(41, {"TERM": "xterm"})
    p.run_started("R", 10_000, 0)
    for i in range(2000):
        p.task_started(f"task-with-a-long-name-{i:05d}", 1)
    clock.now += 3.0
    p.tick()
    p.run_finished("SUCCESS", {"SUCCESS": 0}, 3.0, "r.md")
    statuses = _status_lines(term.output())
    assert statuses
    assert all(len(s) <= 40 for s in statuses), statuses
    assert statuses[-1].startswith("[0/10000] 3.0s")
    assert statuses[-1].endswith(" ...")


def test_no_color_keeps_the_live_view_without_colours() -> None:
    term, p, clock = _live(80, {"TERM": "xterm", "NO_COLOR": "1"})
    _drive(p, clock)
    text = term.output()
    assert "\r\x1b[K" in text  # still live
    assert not SGR.search(text)
    assert "[3/4] FAILED test (exit 1, attempt 2/3, 0.3s)\n" in text


def test_dumb_terminal_gets_plain_lines() -> None:
    term, p, clock = _live(80, {"TERM": "dumb", **SECRETS})
    _drive(p, clock)
    text = term.output()
    assert "\x1b" not in text
    assert "\r" not in text
    assert text.splitlines()[3] == "[2/4] SUCCESS build (1.2s)"


def test_progress_never_prints_env_values() -> None:
    values = {f"K{i}": f"secret-{i}-value" for i in range(5)}
    env: Dict[str, Any] = {"TERM": "xterm", **values}
    outputs = []
    for mode in ("plain", "live"):
        if mode == "plain":
            buf = io.StringIO()
            clock = Clock()
            _drive(make_progress(buf, env, clock=clock), clock)
            outputs.append(buf.getvalue())
        else:
            term, p, clock = _live(80, env)
            _drive(p, clock)
            outputs.append(term.output())
    for text in outputs:
        assert "build" in text
        for value in values.values():
            assert value not in text
