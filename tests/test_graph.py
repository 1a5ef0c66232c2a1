"""orch.graph: cycles as paths, execution waves, Mermaid and DOT text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import pytest

from orch.graph import find_cycles, to_dot, to_mermaid, waves
from orch.model import Plan, Task, TaskStatus


def make_plan(deps: Mapping[str, Sequence[str]]) -> Plan:
    return Plan(
        tasks=tuple(Task(id=i, cmd=("true",), depends_on=tuple(d)) for i, d in deps.items())
    )


# --- find_cycles --------------------------------------------------------------------------------


def test_acyclic_graph_has_no_cycle() -> None:
    assert find_cycles({"a": [], "b": ["a"], "c": ["a", "b"], "d": ["c", "b"]}) == []


def test_self_dependency_is_a_one_node_cycle() -> None:
    assert find_cycles({"a": ["a"]}) == [["a", "a"]]


def test_two_node_cycle_is_reported_once_from_the_first_node() -> None:
    assert find_cycles({"a": ["b"], "b": ["a"]}) == [["a", "b", "a"]]


def test_cycle_entered_through_a_tail_starts_at_the_cycle() -> None:
    deps = {"entry": ["x"], "x": ["y"], "y": ["z"], "z": ["x"]}
    assert find_cycles(deps) == [["x", "y", "z", "x"]]


def test_several_disjoint_cycles_are_each_reported_once() -> None:
    deps = {"a": ["b"], "b": ["a"], "ok": [], "c": ["d"], "d": ["e"], "e": ["c"]}
    assert find_cycles(deps) == [["a", "b", "a"], ["c", "d", "e", "c"]]


def test_cycles_sharing_nodes_are_distinct_paths() -> None:
    # a -> b -> a and a -> b -> c -> a share the edge a -> b.
    cycles = find_cycles({"a": ["b"], "b": ["a", "c"], "c": ["a"]})
    assert cycles == [["a", "b", "a"], ["a", "b", "c", "a"]]


def test_unknown_and_repeated_dependencies_are_ignored() -> None:
    assert find_cycles({"a": ["missing", "b", "b"], "b": ["a", "a"]}) == [["a", "b", "a"]]


def test_every_reported_cycle_is_a_real_closed_path() -> None:
    deps = {str(i): [str((i * 7 + 3) % 40), str((i * 11 + 5) % 40)] for i in range(40)}
    cycles = find_cycles(deps)
    assert cycles
    for cycle in cycles:
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1  # elementary: no node twice
        for node, nxt in zip(cycle, cycle[1:]):
            assert nxt in deps[node]
    assert len({tuple(c) for c in cycles}) == len(cycles)


def test_long_cycle_of_10000_nodes_is_found_without_recursion() -> None:
    n = 10_000
    deps = {f"t{i}": [f"t{(i + 1) % n}"] for i in range(n)}
    [cycle] = find_cycles(deps)
    assert len(cycle) == n + 1
    assert cycle[0] == cycle[-1] == "t0"
    assert cycle[1] == "t1"
    assert n > sys.getrecursionlimit()


# --- waves --------------------------------------------------------------------------------------


def test_waves_group_tasks_after_their_latest_dependency_in_plan_order() -> None:
    plan = make_plan(
        {
            "lint": [],
            "test": ["build"],
            "build": [],
            "package": ["test", "lint"],
            "docs": ["build"],
            "notify": [],
        }
    )
    assert waves(plan) == [["lint", "build", "notify"], ["test", "docs"], ["package"]]


def test_waves_of_independent_tasks_is_one_wave() -> None:
    assert waves(make_plan({"c": [], "a": [], "b": []})) == [["c", "a", "b"]]


def test_waves_use_the_longest_path_not_the_shortest() -> None:
    plan = make_plan({"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]})
    assert waves(plan) == [["a"], ["b"], ["c"], ["d"]]


def test_waves_refuse_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        waves(make_plan({"a": ["b"], "b": ["a"]}))


def test_waves_of_a_10000_task_chain() -> None:
    n = 10_000
    # Declared in reverse so that every dependency comes later in plan order.
    plan = make_plan({f"t{i}": ([f"t{i - 1}"] if i else []) for i in reversed(range(n))})
    result = waves(plan)
    assert result == [[f"t{i}"] for i in range(n)]


def test_waves_of_10000_dependencies_on_one_task() -> None:
    n = 10_000
    deps: Dict[str, List[str]] = {f"w{i}": [] for i in range(n)}
    deps["hub"] = list(deps)
    assert waves(make_plan(deps)) == [[f"w{i}" for i in range(n)], ["hub"]]


# --- mermaid ------------------------------------------------------------------------------------

SMALL = make_plan({"build": [], "test": ["build"], "lint": [], "package": ["test", "lint"]})


def test_mermaid_exact_text_for_a_small_plan() -> None:
    assert to_mermaid(SMALL) == (
        "flowchart LR\n"
        '    t0["build"]\n'
        '    t1["test"]\n'
        '    t2["lint"]\n'
        '    t3["package"]\n'
        "    t0 --> t1\n"
        "    t1 --> t3\n"
        "    t2 --> t3\n"
    )


def test_mermaid_with_statuses_labels_and_colours_nodes() -> None:
    statuses = {
        "build": "SUCCESS",
        "test": TaskStatus.FAILED,
        "lint": "RUNNING",
        "package": "SKIPPED",
    }
    assert to_mermaid(SMALL, statuses) == (
        "flowchart LR\n"
        '    t0["build<br/>SUCCESS"]:::success\n'
        '    t1["test<br/>FAILED"]:::failed\n'
        '    t2["lint<br/>RUNNING"]:::running\n'
        '    t3["package<br/>SKIPPED"]:::skipped\n'
        "    t0 --> t1\n"
        "    t1 --> t3\n"
        "    t2 --> t3\n"
        "    classDef success fill:#d4edda,stroke:#28a745,color:#155724\n"
        "    classDef failed fill:#f8d7da,stroke:#dc3545,color:#721c24\n"
        "    classDef skipped fill:#e2e3e5,stroke:#6c757d,color:#383d41\n"
        "    classDef running fill:#cce5ff,stroke:#007bff,color:#004085\n"
    )


def test_mermaid_every_status_has_its_own_colour_class() -> None:
    names = ["SUCCESS", "FAILED", "SKIPPED", "CANCELED", "RUNNING", "PENDING"]
    plan = make_plan({name.lower(): [] for name in names})
    text = to_mermaid(plan, {name.lower(): name for name in names})
    fills = re.findall(r"classDef (\w+) fill:(#[0-9a-f]{6})", text)
    assert [name for name, _ in fills] == [n.lower() for n in names]
    assert len({fill for _, fill in fills}) == len(names)
    assert dict(fills)["pending"] == "#ffffff"


def test_mermaid_task_missing_from_statuses_has_no_class() -> None:
    text = to_mermaid(SMALL, {"build": "SUCCESS"})
    assert '    t1["test"]\n' in text
    assert text.count(":::") == 1


def test_mermaid_unknown_status_is_shown_without_a_class() -> None:
    text = to_mermaid(make_plan({"a": []}), {"a": "WEIRD"})
    assert '    t0["a<br/>WEIRD"]\n' in text
    assert "classDef" not in text


def test_mermaid_node_ids_are_safe_whatever_the_task_id() -> None:
    plan = make_plan({"a.b-c": [], "end": ["a.b-c"], "1_x": ["end"]})
    text = to_mermaid(plan)
    assert '    t0["a.b-c"]\n    t1["end"]\n    t2["1_x"]\n' in text
    assert "    t0 --> t1\n    t1 --> t2\n" in text


def test_mermaid_labels_escape_specials_with_entity_codes() -> None:
    # Not valid task ids, but a label must stay inside its quotes whatever it holds.
    plan = make_plan({'x"y': [], "a#b<c>&`d": [], "line\nbreak": []})
    text = to_mermaid(plan, {'x"y': 'S"T'})
    assert '    t0["x#quot;y<br/>S#quot;T"]\n' in text
    assert '    t1["a#35;b#lt;c#gt;#amp;#96;d"]\n' in text
    assert '    t2["line#10;break"]\n' in text
    for line in text.splitlines()[1:]:
        inside = re.fullmatch(r'    t\d+\["([^"]*)"\](:::\w+)?', line)
        assert inside, line


# Real Mermaid (the library GitHub runs) parses what to_mermaid writes. Needs node plus
# `npm install --prefix /tmp/mermaid-node mermaid jsdom` (or ORCH_MERMAID_NODE_MODULES).
NODE_MODULES = Path(os.environ.get("ORCH_MERMAID_NODE_MODULES", "/tmp/mermaid-node/node_modules"))
MERMAID_PARSE = r"""
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
const modules = process.argv[2];
const { JSDOM } = createRequire(join(modules, 'noop.js'))('jsdom');
globalThis.window = new JSDOM('').window;
globalThis.document = globalThis.window.document;
const { default: mermaid } = await import(
  pathToFileURL(join(modules, 'mermaid', 'dist', 'mermaid.core.mjs')).href);
mermaid.initialize({ startOnLoad: false });
const out = [];
for (const text of JSON.parse(readFileSync(0, 'utf8'))) {
  try {
    const db = (await mermaid.mermaidAPI.getDiagramFromText(text)).db;
    const v = db.getVertices();
    const nodes = (v instanceof Map ? [...v.values()] : Object.values(v));
    out.push({ nodes: nodes.map((n) => [n.id, n.classes]),
               edges: db.getEdges().map((e) => [e.start, e.end]) });
  } catch (e) { out.push({ error: String(e && e.message || e) }); }
}
console.log(JSON.stringify(out));
"""


def mermaid_parse(texts: List[str], tmp_path: Path) -> List[Dict[str, Any]]:
    if shutil.which("node") is None or not (NODE_MODULES / "mermaid").is_dir():
        pytest.skip(f"node with mermaid and jsdom under {NODE_MODULES} is not installed")
    script = tmp_path / "parse.mjs"
    script.write_text(MERMAID_PARSE)
    proc = subprocess.run(
        ["node", str(script), str(NODE_MODULES)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: List[Dict[str, Any]] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_real_mermaid_parses_the_output(tmp_path: Path) -> None:
    awkward = make_plan(
        {'x"y': [], "a#b<c>&`d": ['x"y'], "line\nbreak": [], "[x]{y}(z)|;": [], "graph": []}
    )
    names = ["SUCCESS", "FAILED", "SKIPPED", "CANCELED", "RUNNING", "PENDING"]
    coloured = make_plan({"end": [], "style": ["end"], "click": ["style"], "a.b-c": ["end"]})
    statuses = dict(zip(["end", "style", "click", "a.b-c"], names))
    texts = [to_mermaid(SMALL), to_mermaid(awkward, {'x"y': 'S"T'}), to_mermaid(coloured, statuses)]
    small, odd, status = mermaid_parse(texts, tmp_path)
    assert small == {
        "nodes": [["t0", []], ["t1", []], ["t2", []], ["t3", []]],
        "edges": [["t0", "t1"], ["t1", "t3"], ["t2", "t3"]],
    }
    assert odd == {"nodes": [[f"t{i}", []] for i in range(5)], "edges": [["t0", "t1"]]}
    assert status == {
        "nodes": [
            ["t0", ["success"]],
            ["t1", ["failed"]],
            ["t2", ["skipped"]],
            ["t3", ["canceled"]],
        ],
        "edges": [["t0", "t1"], ["t1", "t2"], ["t0", "t3"]],
    }


# --- dot ----------------------------------------------------------------------------------------


def test_dot_exact_text_for_a_small_plan() -> None:
    assert to_dot(SMALL) == (
        "digraph plan {\n"
        "    rankdir=LR;\n"
        "    node [shape=box];\n"
        '    "build";\n'
        '    "test";\n'
        '    "lint";\n'
        '    "package";\n'
        '    "build" -> "test";\n'
        '    "test" -> "package";\n'
        '    "lint" -> "package";\n'
        "}\n"
    )


def test_dot_with_statuses() -> None:
    text = to_dot(make_plan({"a": [], "b": ["a"], "c": []}), {"a": "SUCCESS", "b": "CANCELED"})
    assert text == (
        "digraph plan {\n"
        "    rankdir=LR;\n"
        "    node [shape=box];\n"
        '    "a" [label="a\\nSUCCESS", style=filled, fillcolor="#d4edda", color="#28a745", '
        'fontcolor="#155724"];\n'
        '    "b" [label="b\\nCANCELED", style=filled, fillcolor="#f5d9f2", color="#c026d3", '
        'fontcolor="#701a75"];\n'
        '    "c";\n'
        '    "a" -> "b";\n'
        "}\n"
    )


def test_dot_escapes_quotes_backslashes_and_newlines() -> None:
    text = to_dot(make_plan({'q"x\\y': [], "n\nl": ['q"x\\y']}))
    assert '    "q\\"x\\\\y";\n' in text
    assert '    "n\\nl";\n' in text
    assert '    "q\\"x\\\\y" -> "n\\nl";\n' in text


def test_repeated_dependency_gives_one_edge() -> None:
    plan = make_plan({"a": [], "b": ["a", "a"]})
    assert to_mermaid(plan).count("-->") == 1
    assert to_dot(plan).count("->") == 1


def test_find_cycles_stops_at_the_limit() -> None:
    # Depth first: the search reaches t49 before it sees any way back to t0.
    deps = {f"t{i}": [f"t{i + 1}", "t0"] for i in range(50)}
    assert len(find_cycles(deps)) == 50
    first = [f"t{i}" for i in range(50)]
    assert find_cycles(deps, limit=2) == [[*first, "t0"], [*first[:-1], "t0"]]
