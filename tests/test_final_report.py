"""orch.final_report: report/final_report.md, most important first.

Pure rendering from state dicts (built as in tests/test_report.py), log tails from real files
written at known offsets, and two real runs of the cases that once reported nothing useful: a
timed-out agent that only wrote to stdout, and a rate-limited one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import Orch, run_id_of
from test_report import (
    T0_MS,
    attempt,
    awkward_run,
    failed_run,
    interrupted_run,
    large_run,
    run_state,
    task,
)

from orch import final_report

GANTT_HEAD = ["gantt", "    dateFormat x", "    axisFormat %H:%M:%S", "    todayMarker off"]


def no_tail(path: Optional[str], start: int, lines: int, max_bytes: int) -> List[str]:
    return []


def tail_of(text: List[str]) -> Any:
    def read(path: Optional[str], start: int, lines: int, max_bytes: int) -> List[str]:
        return text[-lines:]

    return read


def sections(text: str) -> List[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


# --- order: what went wrong first ---------------------------------------------------------


def test_summary_and_failures_come_first_the_full_task_table_after() -> None:
    text = final_report.render_final_report(failed_run(), tail_of(["boom"]))
    assert sections(text) == [
        "Failures",
        "Canceled while running",
        "Not run",
        "Tasks",
        "Artifacts",
        "Run",
        "Graph",
        "Timeline",
    ]
    head = text[: text.index("## Failures")]
    assert head == (
        "# Run `20261125_090000_a1b2c3`: FAILED\n"
        "\n"
        "**FAILED**: 1/6 ok, 2 failed, 2 canceled, 1 skipped; wall time 22.0s.\n"
        "\n"
        "Goal: Ship the release\n"
        "\n"
        "| Status | Tasks | Which |\n"
        "| --- | ---: | --- |\n"
        "| FAILED | 2 | `a.b-c_1`, `X` |\n"
        "| CANCELED | 2 | `deploy`, `lint` |\n"
        "| SKIPPED | 1 | because of `a.b-c_1`: 1 (`x.y`) |\n"
        "| SUCCESS | 1 | - |\n"
        "\n"
    )


def test_a_failure_shows_reason_attempts_output_and_the_logs_command() -> None:
    text = final_report.render_final_report(failed_run(), tail_of(["line one", "line two"]))
    start = text.index("### `a.b-c_1`")
    block = text[start : text.index("\n#", start)]
    assert block.startswith("### `a.b-c_1`: timed out, SIGTERM\n\n")
    # Ran 3.0 + 3.5 + 10.0 s: the waits between attempts are not counted.
    assert (
        "- **Ran:** 16.5s in 3 attempts (attempts 1-3; waits between attempts not counted)\n"
        in block
    )
    assert "- **Blocked:** 1 skipped task depends on it\n" in block
    assert "- **Command:** `python3 tools/fake_agent.py a.b-c_1`\n" in block
    # The report is read later, from anywhere: --home unless the home is <workdir>/.orch.
    assert "- **All of its output:** `orch logs 20261125_090000_a1b2c3 --task a.b-c_1`\n" in block
    assert "Last 2 lines of stdout (attempt 3):\n\n```text\nline one\nline two\n```\n" in block
    assert "Last 2 lines of stderr (attempt 3):\n\n```text\nline one\nline two\n```\n" in block
    assert "| 3 | 2026-11-25T09:00:11+00:00 | 10.0s | timed out, SIGTERM | - |" in block
    state = failed_run()
    state["home"] = "/elsewhere/home"
    text = final_report.render_final_report(state, no_tail)
    assert "`orch logs 20261125_090000_a1b2c3 --task X --home /elsewhere/home`" in text


def test_reasons_say_which_limit_and_why_not_retried() -> None:
    state = run_state(
        {
            "idle": task(
                "idle",
                "FAILED",
                [],
                [attempt(1, 0, 2.0, exit_code=None, signal=15, timed_out=True)],
                timed_out_by="idle_timeout_sec",
            ),
            "picky": task(
                "picky",
                "FAILED",
                [],
                [attempt(1, 0, 1.0, exit_code=2)],
                error="not retried: exit 2 is not in retry_on",
            ),
        }
    )
    text = final_report.render_final_report(state, no_tail)
    assert "### `idle`: timed out (idle\\_timeout\\_sec), SIGTERM\n" in text
    assert "### `picky`: exit 2; not retried: exit 2 is not in retry\\_on\n" in text
    assert "Nothing on stdout (attempt 1).\n" in text
    assert "Nothing on stderr (attempt 1).\n" in text


def test_tails_come_from_the_failed_attempt_own_offsets(tmp_path: Path) -> None:
    out = tmp_path / "t.out.log"
    err = tmp_path / "t.err.log"
    first_out = b"attempt one was here\n" * 50
    first_err = b"E: first\n"
    out.write_bytes(first_out + b"thinking...\n\x1b[32mstill thinking\x1b[0m\n\n")
    err.write_bytes(first_err)  # the failed attempt wrote nothing on stderr
    history = [attempt(1, 0, 1.0, exit_code=1), attempt(2, 3, 1.0, exit_code=1)]
    history[1]["stdout_offset"] = len(first_out)
    history[1]["stderr_offset"] = len(first_err)
    entry = task("t", "FAILED", [], history, stdout_path=str(out), stderr_path=str(err))
    text = final_report.render_final_report(run_state({"t": entry}))
    assert (
        "Last 2 lines of stdout (attempt 2):\n\n```text\nthinking...\nstill thinking\n```" in text
    )
    assert "attempt one was here" not in text
    assert "E: first" not in text
    assert "Nothing on stderr (attempt 2)." in text


def test_tails_are_bounded_reads_of_long_lines(tmp_path: Path) -> None:
    out = tmp_path / "big.out.log"
    out.write_bytes(b"x" * 5_000_000 + b"\nthe end\n")
    entry = task("big", "FAILED", [], [attempt(1, 0, 1.0, exit_code=1)], stdout_path=str(out))
    start = time.perf_counter()
    text = final_report.render_final_report(run_state({"big": entry}))
    assert time.perf_counter() - start < 1.0
    block = text[text.index("Last 2 lines of stdout") :]
    assert "\nthe end\n" in block
    long_line = block.splitlines()[3]
    assert len(long_line) == 1000 and long_line.endswith("…")


def test_allowed_failures_and_unmet_conditions_are_not_errors() -> None:
    state = run_state(
        {
            "lint": task(
                "lint", "FAILED", [], [attempt(1, 0, 1, exit_code=1)], allowed_failure=True
            ),
            "after": task("after", "SUCCESS", ["lint"], [attempt(1, 2, 1)]),
            "on_fail": task("on_fail", "SKIPPED", ["after"], [], skip_reason="condition_not_met"),
        },
        status="SUCCESS",
    )
    text = final_report.render_final_report(state, tail_of(["style nits"]))
    assert "## Failures" not in text
    assert sections(text)[:2] == ["Not run", "Allowed failures"]
    assert "**SUCCESS**: 1/3 ok, 1 allowed failure, 1 skipped (condition not met)" in text
    assert "| FAILED (allowed: not an error) | 1 | `lint` |" in text
    assert "| SKIPPED (condition not met: not an error) | 1 | `on_fail` |" in text
    assert (
        "- **1** skipped: their `run_when` condition did not hold (not an error): `on_fail`" in text
    )
    assert "### `lint`: exit 1\n" in text
    assert "| `lint` | FAILED | 1 | 1.0s | exit 1 | allowed failure |" in text


def _big_failing_run(n: int = 200) -> Dict[str, Any]:
    """A run like the one a reviewer opens: a few successes, one root failure deep in the
    plan, everything behind it skipped, and its chain of skips long."""
    tasks: Dict[str, Any] = {}
    for i in range(n):
        tid = f"step_{i:03d}"
        if i < 40:
            tasks[tid] = task(tid, "SUCCESS", [], [attempt(1, i * 0.1, 0.1)])
        elif i == 40:
            tasks[tid] = task(
                tid,
                "FAILED",
                ["step_039"],
                [attempt(1, 5, 0.5, exit_code=1), attempt(2, 8, 0.5, exit_code=1)],
            )
        else:
            deps = [f"step_{i - 1:03d}", "step_000"]
            tasks[tid] = task(tid, "SKIPPED", deps, [], skip_reason="dependency_not_success")
    return run_state(tasks)


def test_a_200_task_run_shows_its_root_failure_on_the_first_screen() -> None:
    text = final_report.render_final_report(
        _big_failing_run(), tail_of(["ERROR: rate limit exceeded (429)"])
    )
    first_screen = "\n".join(text.splitlines()[:45])
    assert "| SKIPPED | 159 | because of `step_040`: 159 (`step_041`, `step_042`" in first_screen
    assert "### `step_040`: exit 1" in first_screen
    assert "- **Blocked:** 159 skipped tasks depend on it" in first_screen
    assert "ERROR: rate limit exceeded (429)" in first_screen
    assert "`orch logs 20261125_090000_a1b2c3 --task step_040`" in first_screen
    # The skipped tasks are named by their root, in one line, before the full table.
    assert (
        "- **159** skipped because `step_040` failed: `step_041`, `step_042`," in text
        and text.index("## Not run") < text.index("## Tasks")
    )
    assert "| `step_199` | SKIPPED | 0 | - | - | root failure: step\\_040" in text


def test_many_failures_show_the_first_in_detail_and_name_the_rest() -> None:
    state = run_state(
        {f"f{i}": task(f"f{i}", "FAILED", [], [attempt(1, i, 1, exit_code=1)]) for i in range(30)}
    )
    text = final_report.render_final_report(state, tail_of(["x"]))
    assert text.count("\n### `f") == 20
    assert "And 10 more: `f20`, `f21`," in text


# --- Markdown safety (ported from the 0.1 report) -------------------------------------------


def test_output_fence_outgrows_backticks_in_the_log() -> None:
    lines = ["```", "a ```` b", "````` five"]
    text = final_report.render_final_report(failed_run(), tail_of(lines))
    block = "``````text\n```\na ```` b\n````` five\n``````\n"
    # stdout and stderr of the two failures and of the task canceled while running
    assert text.count(block) == 6


def test_unreadable_log_is_said_not_fatal() -> None:
    def broken(path: Optional[str], start: int, lines: int, max_bytes: int) -> List[str]:
        raise PermissionError(13, "Permission denied")

    text = final_report.render_final_report(failed_run(), broken)
    assert "The stderr (attempt 1) could not be read: Permission denied." in text


def test_default_tail_reader_drops_colour_codes_and_keeps_tabs(tmp_path: Path) -> None:
    err = tmp_path / "x.err.log"
    err.write_bytes(b"\x1b[31mFAILED\x1b[0m tests/test_x.py\r\ntab\there\x07\ncaf\xc3\xa9 \xff")
    entry = task("X", "FAILED", [], [attempt(1, 0, 1, exit_code=1)], stderr_path=str(err))
    text = final_report.render_final_report(run_state({"X": entry}))
    assert "```text\nFAILED tests/test_x.py\ntab\there\ncafé \ufffd\n```\n" in text


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_report_table_cells_escape_pipes_and_newlines() -> None:
    state = failed_run()
    state["goal"] = "build | test\nthen *ship* <b>"
    inspect = state["tasks"]["inspect"]
    inspect["artifacts"].append({"path": "odd|name`x`.txt", "size": 5, "sha256": "ff" * 32})
    state["tasks"]["deploy"]["error"] = "first | line\nsecond line"
    state["tasks"]["a.b-c_1"]["history"][0]["error"] = "cannot start 'a|b':\nNo such file"
    text = final_report.render_final_report(state, no_tail)

    assert "Goal: build \\| test<br>then \\*ship\\* \\<b\\>\n" in text
    assert "| ``odd\\|name`x`.txt`` | 5 B | `ffffffffffff` |\n" in text
    assert (
        "| `deploy` | CANCELED | 0 | - | - | run\\_canceled; first \\| line second line |" in text
    )
    assert (
        "| 1 | 2026-11-25T09:00:02+00:00 | 3.0s | exit 1 | cannot start 'a\\|b': No such file |"
        in text
    )
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
    text = final_report.render_final_report(state, no_tail)
    assert sections(text) == ["Tasks", "Artifacts", "Run", "Graph", "Timeline"]
    assert "**SUCCESS**: 1/1 ok; wall time 22.0s.\n" in text
    assert "## Artifacts\n\nNo task declared outputs that produced artifacts.\n" in text
    assert "Goal:" not in text


def test_report_when_no_attempt_started() -> None:
    state = run_state(
        {"a": task("a", "CANCELED", [], [], skip_reason="run_canceled")}, status="CANCELED"
    )
    text = final_report.render_final_report(state, no_tail)
    assert "## Timeline\n\nNo attempt was started.\n" in text
    assert "- **1** canceled before they started: `a`\n" in text


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


def _mermaid(state: Any, kind: str) -> List[str]:
    """The lines of the report's Mermaid block that starts with ``kind`` (what a reader sees)."""
    text = final_report.render_final_report(state, tail_of([]))
    blocks = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    found = [block.splitlines() for block in blocks if block.startswith(kind)]
    assert len(found) == 1, blocks
    return found[0]


def _decode_label(label: str) -> str:
    named = {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}
    return re.sub(r"#(\w+);", lambda m: named.get(m.group(1)) or chr(int(m.group(1))), label)


def test_flowchart_is_well_formed_with_awkward_ids() -> None:
    state = awkward_run()
    lines = _mermaid(state, "flowchart")
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
    assert classes == {f"t{i}": "failed" if i == 2 else "success" for i in range(6)}


def test_gantt_is_well_formed_with_awkward_ids() -> None:
    lines = _mermaid(awkward_run(), "gantt")
    # Attempts within a minute: ticks a fraction of a second apart need milliseconds.
    assert lines[:4] == [*GANTT_HEAD[:2], "    axisFormat %M:%S.%L", GANTT_HEAD[3]]
    sections_ = [line[len("    section ") :] for line in lines if "section" in line]
    assert sections_ == ["end", "X", "x.y", "a.b-c_1", "1st", "we_ird _id_ x_y_z_b__"]
    bars = [GANTT_LINE.fullmatch(line) for line in lines[4:]]
    assert all(bars), lines
    spans = [(int(m.group("start")), int(m.group("end"))) for m in bars if m and m.group("start")]
    assert len(spans) == 12
    assert spans[0] == (T0_MS, T0_MS + 1500)
    assert all(start <= end for start, end in spans)
    assert lines[5] == f"    attempt 1 :crit, a0, {T0_MS}, {T0_MS + 1500}"
    assert lines[6] == f"    attempt 2 :done, a1, {T0_MS + 2000}, {T0_MS + 2250}"
    assert "    attempt 2 :crit, a5, " in "\n".join(lines)


def test_gantt_shows_a_running_attempt_as_active_up_to_the_last_update() -> None:
    lines = _mermaid(interrupted_run(), "gantt")
    assert lines[:4] == GANTT_HEAD  # 95 s of attempts: seconds are enough
    assert lines[-2:] == [
        "    section test",
        f"    attempt 1 :active, a1, {T0_MS + 2000}, {T0_MS + 95000}",
    ]


def test_large_run_renders_linearly_and_leaves_out_what_mermaid_cannot_draw() -> None:
    state = large_run()
    start = time.perf_counter()
    text = final_report.render_final_report(state, tail_of(["boom"]))
    assert time.perf_counter() - start < 2.0  # a sanity bound; the budget is in bench/
    assert "Graph omitted: 10000 tasks and 19989 dependencies" in text
    assert "`orch graph 20261125_090000_a1b2c3` prints it." in text
    assert "Timeline omitted: 10000 attempts are more than Mermaid renders." in text
    assert "```mermaid" not in text
    assert text.count("\n### `t") == 20
    assert "And 84 more: `t1940`, `t2037`," in text


@pytest.mark.parametrize(("n", "drawn"), [(32, True), (33, False)])
def test_graph_is_left_out_past_mermaids_edge_limit(n: int, drawn: bool) -> None:
    ids = [f"t{i}" for i in range(n)]
    state = run_state({tid: task(tid, "SUCCESS", ids[:i], []) for i, tid in enumerate(ids)})
    text = final_report.render_final_report(state, no_tail)
    assert ("```mermaid\nflowchart LR\n" in text) is drawn
    assert (f"Graph omitted: {n} tasks and 528 dependencies" in text) is not drawn


# --- real runs: the cases that once reported nothing useful ---------------------------------


def test_real_run_report_shows_stdout_of_a_timed_out_and_a_rate_limited_agent(
    orch: Orch,
) -> None:
    plan = orch.plan(
        f"""
        tasks:
          - id: hang
            cmd: ["sh", "-c", "echo thinking...; sleep 100"]
            timeout_sec: 1
          - id: api
            cmd: ["python3", "{Path(__file__).parent.parent / "tools" / "fake_agent.py"}",
                  "fix", "--rate-limit", "--quiet"]
          - id: apply
            cmd: ["true"]
            depends_on: [api]
          - id: verify
            cmd: ["true"]
            depends_on: [apply]
        """
    )
    proc = orch.run("run", plan, env={"ORCH_GRACE_SEC": "0.5"})
    assert proc.returncode == 3, proc.stderr
    run_id = run_id_of(proc.stdout)
    text = (orch.run_dir(run_id) / "report" / "final_report.md").read_text(encoding="utf-8")
    hang = text[text.index("### `hang`") :]
    assert hang.startswith("### `hang`: timed out (timeout\\_sec)")
    assert "Last line of stdout (attempt 1):\n\n```text\nthinking...\n```" in hang
    api = text[text.index("### `api`") :]
    assert "```text\nERROR: rate limit exceeded (429)\n```" in api
    assert f"`orch logs {run_id} --task api --home {orch.home}`" in api
    assert "- **2** skipped because `api` failed: `apply`, `verify`" in text
    # The plain progress says the same, one line per transition plus the failure's tails.
    err = proc.stderr
    assert re.search(r"^\[\d/4\] FAILED api \(exit 1, \d\.\ds\)$", err, re.M), err
    assert "  stdout| ERROR: rate limit exceeded (429)\n" in err
    assert f"  all of it: orch logs {run_id} --task api --home {orch.home}\n" in err
    assert re.search(r"^\[\d/4\] SKIPPED verify \(root failure: api\)$", err, re.M), err
    assert "  stdout| thinking...\n" in err
