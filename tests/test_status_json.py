"""`status --json` streamed a task per line, `list` from the snapshot's head."""

from __future__ import annotations

import json

from conftest import Orch, run_id_of

from orch import store

PLAN = """
tasks:
  - {id: a, cmd: "true"}
  - {id: b, cmd: "false", depends_on: [a]}
  - {id: c, cmd: "true", depends_on: [b]}
"""


def test_status_json_is_the_state_plus_effective_status(orch: Orch) -> None:
    run_id = run_id_of(orch.run("run", orch.plan(PLAN)).stdout)
    proc = orch.run("status", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    expected = dict(orch.state(run_id))
    expected["effective_status"] = "FAILED"
    assert shown == expected
    lines = proc.stdout.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert sum(1 for line in lines if line.startswith('    "')) == 3  # a line per task


def test_list_reads_the_head_of_a_finished_run_only(orch: Orch) -> None:
    run_id = run_id_of(orch.run("run", orch.plan(PLAN)).stdout)
    run_dir = str(orch.run_dir(run_id))
    summary = store.read_summary(run_dir)
    assert summary["tasks"] == {}
    assert summary["task_counts"] == {"SUCCESS": 1, "FAILED": 1, "SKIPPED": 1}
    assert summary["status"] == "FAILED"
    listing = json.loads(orch.run("list", "--json").stdout)
    assert listing[0]["counts"]["SKIPPED"] == 1 and listing[0]["counts"]["FAILED"] == 1
    assert "1/3 ok, 1 failed, 1 skipped" in orch.run("list").stdout


def test_a_journal_makes_list_read_the_whole_state(orch: Orch) -> None:
    run_id = run_id_of(orch.run("run", orch.plan(PLAN)).stdout)
    run_dir = orch.run_dir(run_id)
    seq = json.loads((run_dir / "state.json").read_bytes())["journal_seq"]
    record = {"t": "c", "s": {"status": "SUCCESS"}, "n": seq + 1}
    (run_dir / "journal.jsonl").write_text(json.dumps(record) + "\n")
    summary = store.read_summary(str(run_dir))
    assert summary["tasks"]["c"]["status"] == "SUCCESS"  # replayed, not the stale counts
    assert "2/3 ok" in orch.run("list").stdout


def test_timestamps_are_what_isoformat_writes() -> None:
    # iso_time builds the string from a cache of whole seconds: it must match datetime's own
    # rounding (half-even microseconds, a carry into the next second, no ".000000").
    import random
    from datetime import datetime

    from orch.store import _LOCAL_TZ, iso_time

    rng = random.Random(7)
    moments = [1.0e9, 1.0e9 + 0.9999995, 1.0e9 + 0.0000005, 1764633600.25]
    moments += [rng.uniform(0, 2.0e9) for _ in range(5000)]
    for moment in moments:
        assert iso_time(moment) == datetime.fromtimestamp(moment, _LOCAL_TZ).isoformat()
