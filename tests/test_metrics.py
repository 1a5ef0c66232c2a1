"""Metrics and budget end to end, with the fake agent printing what claude prints."""

from __future__ import annotations

import sys

from conftest import REPO, Orch, run_id_of

AGENT = [sys.executable, str(REPO / "tools" / "fake_agent.py")]


def test_orch_metrics_file_and_stdout_json_end_to_end(orch: Orch) -> None:
    plan = orch.plan(
        f"""
        budget: {{max_cost_usd: 0.05}}
        tasks:
          - id: plan
            cmd: {[*AGENT, "build", "--quiet", "--json-result", "--cost-usd", "0.02"]}
            metrics: stdout-json
          - id: code
            cmd: {[*AGENT, "build", "--quiet", "--write-metrics", "--cost-usd", "0.04"]}
            depends_on: [plan]
          - id: review
            cmd: {[*AGENT, "build", "--quiet"]}
            depends_on: [code]
        """
    )
    proc = orch.run("run", plan)
    assert proc.returncode == 3, proc.stderr
    state = orch.state(run_id_of(proc.stdout))
    tasks = state["tasks"]
    assert tasks["plan"]["metrics"]["cost_usd"] == 0.02
    assert tasks["plan"]["metrics"]["input_tokens"] == 1200
    assert tasks["code"]["metrics"]["cost_usd"] == 0.04
    assert abs(state["metrics"]["cost_usd"] - 0.06) < 1e-9
    assert tasks["review"]["status"] == "SKIPPED"
    assert tasks["review"]["skip_reason"] == "budget_exceeded"
    assert "budget: $0.06 spent of max_cost_usd $0.05" in proc.stderr
