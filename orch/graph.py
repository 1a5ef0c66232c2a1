"""Pure functions over the task graph: cycles, execution waves, Mermaid and DOT text.

Everything here is iterative: plans of tens of thousands of tasks, chained end to end, must not
hit Python's recursion limit.
"""

from __future__ import annotations

import heapq
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from orch.model import Plan, Task

__all__ = [
    "CONDITION_NOT_MET",
    "DEPENDENCY_NOT_SUCCESS",
    "STATUS_COLORS",
    "Outcome",
    "PlanChanges",
    "Readiness",
    "downstream",
    "find_cycles",
    "is_failure",
    "mermaid_flowchart",
    "passes_for_dependents",
    "plan_changes",
    "select_for_resume",
    "to_dot",
    "to_mermaid",
    "waves",
]

# status -> (fill, stroke, text colour); light fills keep the black-on-colour labels readable.
STATUS_COLORS: Dict[str, Tuple[str, str, str]] = {
    "SUCCESS": ("#d4edda", "#28a745", "#155724"),
    "FAILED": ("#f8d7da", "#dc3545", "#721c24"),
    "SKIPPED": ("#e2e3e5", "#6c757d", "#383d41"),
    "CANCELED": ("#f5d9f2", "#c026d3", "#701a75"),  # magenta, as in the terminal (_fmt)
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


# --------------------------------------------------------------------------- readiness


class Outcome(NamedTuple):
    """How a task ended, as its dependents see it."""

    status: str  # SUCCESS, FAILED, SKIPPED or CANCELED
    skip_reason: Optional[str] = None
    allowed_failure: bool = False


def passes_for_dependents(outcome: Outcome) -> bool:
    """What ``run_when: success`` waits for: SUCCESS, or a FAILED task allowed to fail."""
    return outcome.status == "SUCCESS" or (outcome.status == "FAILED" and outcome.allowed_failure)


def is_failure(outcome: Outcome) -> bool:
    """What ``run_when: failure`` waits for: a FAILED task (allowed or not), or a task
    SKIPPED because of one."""
    return outcome.status == "FAILED" or (
        outcome.status == "SKIPPED" and outcome.skip_reason == DEPENDENCY_NOT_SUCCESS
    )


DEPENDENCY_NOT_SUCCESS = "dependency_not_success"
CONDITION_NOT_MET = "condition_not_met"


class Readiness:
    """Ninja's Plan: which of the selected tasks may start, in plan order, and which can
    no longer run.

    Pure bookkeeping: the scheduler reports how tasks ended and asks for the next ready task;
    nothing here runs, records or prints. Tasks not selected keep the outcome they had
    (``recorded``); a selected task waits until each of its dependencies has ended, then is
    ready or skipped by its ``run_when`` (success: every dependency passed; done: always;
    failure: at least one dependency failed). A ``run_when: success`` task is skipped as soon
    as one dependency cannot pass. Ready tasks wait in one heap per pool, so a full pool never
    holds up a task of another pool (no head-of-line blocking).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        selected: Set[str],
        recorded: Mapping[str, Outcome],
    ) -> None:
        self._order = {t.id: i for i, t in enumerate(tasks)}
        self._tasks = {t.id: t for t in tasks}
        self._dependents: Dict[str, List[str]] = {t.id: [] for t in tasks}
        for t in tasks:
            for dep in dict.fromkeys(t.depends_on):
                self._dependents[dep].append(t.id)
        self._selected = selected
        self._ended: Dict[str, Outcome] = {
            task_id: outcome for task_id, outcome in recorded.items() if task_id not in selected
        }
        self._waiting: Dict[str, int] = {}  # selected task -> dependencies not ended yet
        # What a decision needs, kept as dependencies end (a dense plan would otherwise look
        # at every dependency again each time one ends): the ended ones that do not pass, and
        # whether one failed.
        self._blocking: Dict[str, List[Outcome]] = {}
        self._failed_dep: Set[str] = set()
        self._ready: Dict[Optional[str], List[Tuple[int, str]]] = {}
        self._decided: Set[str] = set()  # selected tasks made ready or skipped

    def start(self) -> List[Tuple[str, str]]:
        """Find the tasks that can start at once; returns the ones skipped already."""
        skipped: List[Tuple[str, str]] = []
        for task_id in sorted(self._selected, key=self._order.__getitem__):
            waiting = 0
            for dep in dict.fromkeys(self._tasks[task_id].depends_on):
                if dep in self._ended:
                    self._note(task_id, self._ended[dep])
                else:
                    waiting += 1
            self._waiting[task_id] = waiting
        for task_id in sorted(self._selected, key=self._order.__getitem__):
            if task_id not in self._decided:
                self._decide(task_id, skipped)
        return skipped

    def task_ended(self, task_id: str, outcome: Outcome) -> List[Tuple[str, str]]:
        """Record how ``task_id`` ended; returns the (task, skip reason) that follow from it,
        in the order they were decided (each already counted as ended)."""
        skipped: List[Tuple[str, str]] = []
        self._end(task_id, outcome, skipped)
        return skipped

    def requeue(self, task_id: str) -> None:
        """A task that will run again (a retry after its backoff) is ready again."""
        pool = self._tasks[task_id].pool
        heapq.heappush(self._ready.setdefault(pool, []), (self._order[task_id], task_id))

    def has_ready(self) -> bool:
        return any(self._ready.values())

    def pop_ready(self, can_start: Callable[[Optional[str]], bool]) -> Optional[str]:
        """The first ready task in plan order whose pool ``can_start``; None if none."""
        best: Optional[Tuple[int, str]] = None
        best_pool: Optional[str] = None
        for pool, heap in self._ready.items():
            if heap and (best is None or heap[0] < best) and can_start(pool):
                best, best_pool = heap[0], pool
        if best is None:
            return None
        heapq.heappop(self._ready[best_pool])
        return best[1]

    def waiting_for_pool(self, can_start: Callable[[Optional[str]], bool]) -> List[str]:
        """Ready tasks held back only by a full pool, in plan order."""
        held = [t for pool, heap in self._ready.items() if not can_start(pool) for _, t in heap]
        return sorted(held, key=self._order.__getitem__)

    def abandon(self) -> List[str]:
        """Stop starting anything: returns the ready and the still-waiting selected tasks in
        plan order (now decided; the caller marks them). Running tasks are not among them."""
        left = [task_id for heap in self._ready.values() for _, task_id in heap]
        self._ready.clear()
        left.extend(t for t in self._selected if t not in self._decided)
        self._decided.update(left)
        return sorted(left, key=self._order.__getitem__)

    # ------------------------------------------------------------------ internals

    def _end(self, task_id: str, outcome: Outcome, skipped: List[Tuple[str, str]]) -> None:
        self._ended[task_id] = outcome
        for dependent in self._dependents[task_id]:
            if dependent not in self._waiting or dependent in self._decided:
                continue
            self._waiting[dependent] -= 1
            self._note(dependent, outcome)
            self._decide(dependent, skipped)

    def _note(self, task_id: str, outcome: Outcome) -> None:
        """One of ``task_id``'s dependencies ended so."""
        if not passes_for_dependents(outcome):
            self._blocking.setdefault(task_id, []).append(outcome)
        if is_failure(outcome):
            self._failed_dep.add(task_id)

    def _decide(self, task_id: str, skipped: List[Tuple[str, str]]) -> None:
        task = self._tasks[task_id]
        reason: Optional[str] = None
        if task.run_when == "success":
            blocking = self._blocking.get(task_id)
            if blocking:
                # A condition skip upstream is not a failure: it propagates as itself.
                condition = all(o.skip_reason == CONDITION_NOT_MET for o in blocking)
                reason = CONDITION_NOT_MET if condition else DEPENDENCY_NOT_SUCCESS
            elif self._waiting[task_id]:
                return
        else:
            if self._waiting[task_id]:
                return
            if task.run_when == "failure" and task_id not in self._failed_dep:
                reason = CONDITION_NOT_MET
        self._decided.add(task_id)
        if reason is None:
            heapq.heappush(self._ready.setdefault(task.pool, []), (self._order[task_id], task_id))
            return
        skipped.append((task_id, reason))
        self._end(task_id, Outcome("SKIPPED", reason), skipped)


def downstream(tasks: Sequence[Task], roots: Iterable[str]) -> Set[str]:
    """Every task that depends on one of ``roots``, directly or not (roots excluded)."""
    dependents: Dict[str, List[str]] = {t.id: [] for t in tasks}
    for t in tasks:
        for dep in t.depends_on:
            dependents[dep].append(t.id)
    found: Set[str] = set()
    stack = list(roots)
    while stack:
        for child in dependents[stack.pop()]:
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def select_for_resume(
    tasks: Sequence[Task],
    recorded: Mapping[str, Outcome],
    *,
    failed_only: bool,
    rerun: Iterable[str] = (),
    rerun_downstream: bool = False,
) -> Set[str]:
    """The tasks a resume runs again; ``recorded`` is every task's outcome (PENDING and
    RUNNING included, as their status).

    Default: every task that is not SUCCESS. ``failed_only``: the FAILED tasks, the PENDING
    ones (an interrupted run's never-started tasks, which would otherwise never run), and the
    tasks skipped because of them, transitively. ``rerun``: these too, SUCCESS or not, and with
    ``rerun_downstream`` everything downstream of them.
    """
    if not failed_only:
        selected = {t.id for t in tasks if recorded[t.id].status != "SUCCESS"}
    else:
        selected = {t.id for t in tasks if recorded[t.id].status in ("FAILED", "PENDING")}
        dependents: Dict[str, List[str]] = {t.id: [] for t in tasks}
        for t in tasks:
            for dep in t.depends_on:
                dependents[dep].append(t.id)
        stack = list(selected)
        while stack:
            for child in dependents[stack.pop()]:
                outcome = recorded[child]
                if (
                    child not in selected
                    and outcome.status == "SKIPPED"
                    and outcome.skip_reason in (DEPENDENCY_NOT_SUCCESS, CONDITION_NOT_MET)
                ):
                    selected.add(child)
                    stack.append(child)
    again = set(rerun)
    if rerun_downstream:
        again |= downstream(tasks, again)
    return selected | again


class PlanChanges(NamedTuple):
    """How an edited plan differs from a run's plan, by task id (each list in plan order)."""

    added: List[str]
    removed: List[str]
    changed: List[str]


def plan_changes(old: Plan, new: Plan) -> PlanChanges:
    """Tasks added, removed, and changed in any part of their definition (cmd, env, cwd,
    depends_on, outputs, limits, policies: everything but the id)."""
    before = {t.id: t for t in old.tasks}
    after = {t.id: t for t in new.tasks}
    return PlanChanges(
        added=[t.id for t in new.tasks if t.id not in before],
        removed=[t.id for t in old.tasks if t.id not in after],
        changed=[t.id for t in new.tasks if t.id in before and before[t.id] != t],
    )
