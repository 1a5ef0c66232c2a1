"""The Mermaid blocks of final_report.md, parsed by the real Mermaid library under Node.

Needs `node` and an npm install of `mermaid` and `jsdom` outside the repo; without them the tests
skip and say how to get them:

    npm install --prefix /tmp/mermaid-node mermaid jsdom

ORCH_MERMAID_NODE_MODULES points at another node_modules directory. Parsing runs Mermaid's own
grammar and database (node classes, edges, gantt dates), which is what GitHub runs before it
draws; drawing itself needs a browser and is not checked here.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
from test_report import (
    T0_MS,
    attempt,
    awkward_run,
    failed_run,
    interrupted_run,
    run_state,
    task,
)

from orch import final_report

NODE_MODULES = Path(os.environ.get("ORCH_MERMAID_NODE_MODULES", "/tmp/mermaid-node/node_modules"))
MERMAID = NODE_MODULES / "mermaid" / "dist" / "mermaid.core.mjs"

CHECKER = r"""
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
const modules = process.argv[2];
const { JSDOM } = createRequire(join(modules, 'noop.js'))('jsdom');
const dom = new JSDOM('<!DOCTYPE html><body></body>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const url = pathToFileURL(join(modules, 'mermaid', 'dist', 'mermaid.core.mjs')).href;
const { default: mermaid } = await import(url);
mermaid.initialize({ startOnLoad: false });
const results = [];
for (const text of JSON.parse(readFileSync(0, 'utf8'))) {
  const out = {};
  try {
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    out.type = diagram.type;
    const db = diagram.db;
    if (db.getVertices) {
      const v = db.getVertices();
      const list = v instanceof Map ? [...v.values()] : Object.values(v);
      out.nodes = list.map((n) => ({ id: n.id, text: n.text, classes: n.classes }));
      out.edges = db.getEdges().map((e) => [e.start, e.end]);
    }
    if (db.getTasks) {
      out.tasks = db.getTasks().map((t) => ({
        section: t.section, name: t.task.trim(), id: t.id,
        start: t.startTime.getTime(), end: t.endTime.getTime(),
        crit: !!t.crit, done: !!t.done, active: !!t.active,
      }));
    }
    out.ok = true;
  } catch (e) {
    out.ok = false;
    out.error = String((e && e.message) || e).split('\n').slice(0, 4).join(' | ');
  }
  results.push(out);
}
console.log(JSON.stringify(results));
"""


def _missing() -> str:
    if shutil.which("node") is None:
        return "node is not installed"
    if not MERMAID.is_file() or not (NODE_MODULES / "jsdom").is_dir():
        return (
            f"mermaid and jsdom are not installed under {NODE_MODULES} "
            "(npm install --prefix /tmp/mermaid-node mermaid jsdom)"
        )
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")


def large_run(n: int = 400) -> Dict[str, Any]:
    """Just under Mermaid's edge limit: the report still draws both charts."""
    tasks = {
        f"step-{i}.x": task(
            f"step-{i}.x", "SUCCESS", [f"step-{i - 1}.x"] if i else [], [attempt(1, i, 0.5)]
        )
        for i in range(n)
    }
    return run_state(tasks)


RUNS = {
    "failed": failed_run(),
    "awkward": awkward_run(),
    "interrupted": interrupted_run(),
    "large": large_run(),
}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, List[Dict[str, Any]]]:
    """Each run's report diagrams as Mermaid parsed them: one Node start for the whole module."""
    blocks = {
        name: mermaid_blocks(final_report.render_final_report(state, lambda *a: ["x"]))
        for name, state in RUNS.items()
    }
    script = tmp_path_factory.mktemp("mermaid") / "check.mjs"
    script.write_text(CHECKER)
    proc = subprocess.run(
        ["node", str(script), str(NODE_MODULES)],
        input=json.dumps([b for name in RUNS for b in blocks[name]]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = iter(json.loads(proc.stdout.splitlines()[-1]))
    return {name: [next(results) for _ in blocks[name]] for name in RUNS}


def mermaid_blocks(markdown: str) -> List[str]:
    return re.findall(r"^```mermaid\n(.*?)^```$", markdown, flags=re.M | re.S)


def label_text(text: str) -> str:
    # Mermaid keeps #quot; entities as placeholders until it draws; undo them as it would.
    return html.unescape(text.replace("ﬂ°°", "&#").replace("ﬂ°", "&").replace("¶ß", ";"))


@pytest.mark.parametrize("name", list(RUNS))
def test_report_diagrams_parse(parsed: Dict[str, List[Dict[str, Any]]], name: str) -> None:
    state = RUNS[name]
    results = parsed[name]
    assert [r.get("error") for r in results] == [None, None]
    assert [r["type"] for r in results] == ["flowchart-v2", "gantt"]
    flow, gantt = results
    ids = list(state["tasks"])
    nodes = {n["id"]: n for n in flow["nodes"]}
    assert [label_text(nodes[f"t{i}"]["text"]) for i in range(len(ids))] == [
        f"{tid}<br>{state['tasks'][tid]['status']}" for tid in ids
    ]
    for i, tid in enumerate(ids):
        assert nodes[f"t{i}"]["classes"] == [state["tasks"][tid]["status"].lower()]
    index = {tid: i for i, tid in enumerate(ids)}
    expected_edges = [
        [f"t{index[dep]}", f"t{i}"]
        for i, tid in enumerate(ids)
        for dep in state["tasks"][tid]["depends_on"]
    ]
    assert sorted(flow["edges"]) == sorted(expected_edges)
    attempts = [h for t in state["tasks"].values() for h in t["history"]]
    assert len(gantt["tasks"]) == len(attempts)
    assert all(b["start"] <= b["end"] for b in gantt["tasks"])


def test_gantt_dates_and_markers_survive_parsing(parsed: Dict[str, List[Dict[str, Any]]]) -> None:
    gantt = parsed["failed"][1]
    bars = [(b["section"], b["name"], b["start"] - T0_MS, b["end"] - T0_MS) for b in gantt["tasks"]]
    assert bars == [
        ("inspect", "attempt 1", 0, 1250),
        ("a.b-c_1", "attempt 1", 2000, 5000),
        ("a.b-c_1", "attempt 2", 6000, 9500),
        ("a.b-c_1", "attempt 3", 11000, 21000),
        ("X", "attempt 1", 2000, 2500),
        ("lint", "attempt 1", 2000, 22000),
    ]
    flags = [(b["crit"], b["done"], b["active"]) for b in gantt["tasks"]]
    assert flags == [
        (False, True, False),
        (True, False, False),
        (True, False, False),
        (True, False, False),
        (True, False, False),
        (False, False, False),
    ]
    running = parsed["interrupted"][1]["tasks"][-1]
    assert (running["active"], running["end"] - T0_MS) == (True, 95000)
