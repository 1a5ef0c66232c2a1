"""Pure functions over the task graph: cycles, execution waves, Mermaid and DOT text.

Everything here is iterative: plans of tens of thousands of tasks, chained end to end, must not
hit Python's recursion limit.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from orch.model import Plan

__all__ = [
    "STATUS_COLORS",
    "find_cycles",
    "mermaid_flowchart",
    "to_dot",
    "to_mermaid",
    "waves",
]

# status -> (fill, stroke, text colour); light fills keep the black-on-colour labels readable.
STATUS_COLORS: Dict[str, Tuple[str, str, str]] = {
    "SUCCESS": ("#d4edda", "#28a745", "#155724"),
    "FAILED": ("#f8d7da", "#dc3545", "#721c24"),
    "SKIPPED": ("#e2e3e5", "#6c757d", "#383d41"),
    "CANCELED": ("#ffe5cc", "#fd7e14", "#7a3e00"),
    "RUNNING": ("#cce5ff", "#007bff", "#004085"),
    "PENDING": ("#ffffff", "#6c757d", "#212529"),
}


def find_cycles(deps: Mapping[str, Sequence[str]], limit: Optional[int] = None) -> List[List[str]]:
    """Cycles of ``deps`` (task -> what it depends on), each as a path ``[a, b, ..., a]``.

    One depth-first search in mapping order; each back edge closes exactly one reported cycle,
    so a cycle is never reported twice (nor once per member), and every group of tasks that
    waits on itself shows up at least once. Not every elementary cycle is listed: their number
    can grow exponentially. Names missing from the mapping are leaves; a self-dependency is the
    cycle ``[a, a]``. Iterative, O(tasks + dependencies + length of the reported paths);
    ``limit`` stops the search after that many cycles (the paths can add up to tasks squared).
    """
    done: Set[str] = set()
    cycles: List[List[str]] = []
    for root in deps:
        if root in done:
            continue
        path: List[str] = [root]
        depth: Dict[str, int] = {root: 0}  # node -> index in path, for nodes on the path
        stack: List[Iterator[str]] = [iter(dict.fromkeys(deps[root]))]
        while stack:
            for dep in stack[-1]:
                if dep in depth:
                    cycles.append([*path[depth[dep] :], dep])
                    if limit is not None and len(cycles) >= limit:
                        return cycles
                elif dep in deps and dep not in done:
                    depth[dep] = len(path)
                    path.append(dep)
                    stack.append(iter(dict.fromkeys(deps[dep])))
                    break
            else:
                stack.pop()
                node = path.pop()
                del depth[node]
                done.add(node)
    return cycles


def waves(plan: Plan) -> List[List[str]]:
    """Task ids grouped in waves: each task's dependencies are all in earlier waves.

    A task sits in the wave right after its latest dependency; within a wave, plan order.
    Raises ``ValueError`` if the plan has a cycle (a validated plan never does).
    """
    order = {task.id: i for i, task in enumerate(plan.tasks)}
    dependents: Dict[str, List[str]] = {task.id: [] for task in plan.tasks}
    waiting: Dict[str, int] = {}
    for task in plan.tasks:
        known = [d for d in dict.fromkeys(task.depends_on) if d in order]
        waiting[task.id] = len(known)
        for dep in known:
            dependents[dep].append(task.id)
    current = [task.id for task in plan.tasks if waiting[task.id] == 0]
    result: List[List[str]] = []
    while current:
        result.append(current)
        ready = []
        for task_id in current:
            for dependent in dependents[task_id]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    ready.append(dependent)
        current = sorted(ready, key=order.__getitem__)
    if sum(len(wave) for wave in result) != len(order):
        raise ValueError("the plan has a dependency cycle")
    return result


def _status_name(status: object) -> str:
    # TaskStatus is a str Enum whose str() differs across Python versions; use its value.
    return str(getattr(status, "value", status))


def _edges(nodes: Sequence[Tuple[str, Sequence[str]]]) -> Iterator[Tuple[str, str]]:
    """(dependency, dependent) pairs in order, each once; unknown ids skipped."""
    known = {task_id for task_id, _ in nodes}
    for task_id, depends_on in nodes:
        for dep in dict.fromkeys(depends_on):
            if dep in known:
                yield dep, task_id


def _plan_nodes(plan: Plan) -> List[Tuple[str, Sequence[str]]]:
    return [(task.id, task.depends_on) for task in plan.tasks]


_MERMAID_ENTITIES = {'"': "#quot;", "#": "#35;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


def _mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label: specials and controls as entity codes."""
    out = []
    for char in text:
        if char in _MERMAID_ENTITIES:
            out.append(_MERMAID_ENTITIES[char])
        elif char == "`" or ord(char) < 32 or 0x7F <= ord(char) < 0xA0:
            out.append(f"#{ord(char)};")
        else:
            out.append(char)
    return "".join(out)


def mermaid_flowchart(
    nodes: Sequence[Tuple[str, Sequence[str]]], statuses: Optional[Mapping[str, object]] = None
) -> Tuple[List[str], int]:
    """Flowchart lines for ``(task id, depends_on)`` pairs, and the number of edges drawn.

    Shared by ``orch graph`` (from a plan) and the final report (from stored state alone).
    Node ids are ``t0, t1, ...`` in order, so any task id is safe; the real id is the quoted
    label. With ``statuses`` each node shows its status and takes its colour class.
    """
    node = {task_id: f"t{i}" for i, (task_id, _) in enumerate(nodes)}
    lines = ["flowchart LR"]
    used: List[str] = []
    for task_id, _ in nodes:
        label = _mermaid_text(task_id)
        css = ""
        if statuses is not None and task_id in statuses:
            status = _status_name(statuses[task_id])
            label += "<br/>" + _mermaid_text(status)
            if status in STATUS_COLORS:
                css = ":::" + status.lower()
                used.append(status)
        lines.append(f'    {node[task_id]}["{label}"]{css}')
    edges = [f"    {node[dep]} --> {node[task_id]}" for dep, task_id in _edges(nodes)]
    lines.extend(edges)
    for status in STATUS_COLORS:
        if status in used:
            fill, stroke, color = STATUS_COLORS[status]
            lines.append(f"    classDef {status.lower()} fill:{fill},stroke:{stroke},color:{color}")
    return lines, len(edges)


def to_mermaid(plan: Plan, statuses: Optional[Mapping[str, object]] = None) -> str:
    """The DAG as a Mermaid flowchart (edges point from a dependency to its dependent)."""
    return "\n".join(mermaid_flowchart(_plan_nodes(plan), statuses)[0]) + "\n"


def _dot_string(text: str) -> str:
    """A DOT quoted string; backslash is escaped too, as labels give it meaning (\\n, \\l)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{escaped}"'


def to_dot(plan: Plan, statuses: Optional[Mapping[str, object]] = None) -> str:
    """The DAG as Graphviz DOT (edges from a dependency to its dependent), plan order."""
    lines = ["digraph plan {", "    rankdir=LR;", "    node [shape=box];"]
    for task in plan.tasks:
        name = _dot_string(task.id)
        if statuses is None or task.id not in statuses:
            lines.append(f"    {name};")
            continue
        status = _status_name(statuses[task.id])
        attrs = [f"label={_dot_string(task.id + chr(10) + status)}"]
        if status in STATUS_COLORS:
            fill, stroke, color = STATUS_COLORS[status]
            attrs.append(f'style=filled, fillcolor="{fill}", color="{stroke}", fontcolor="{color}"')
        lines.append(f"    {name} [{', '.join(attrs)}];")
    lines.extend(
        f"    {_dot_string(dep)} -> {_dot_string(task_id)};"
        for dep, task_id in _edges(_plan_nodes(plan))
    )
    lines.append("}")
    return "\n".join(lines) + "\n"
