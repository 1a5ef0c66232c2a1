"""Every path under ``<home>/runs/<run_id>/``: the only module that spells their names.

```
<home>/runs/<run_id>/
  plan.yaml  plan.N.yaml          the plan as given; earlier snapshots after resume --plan
  state.json  journal.jsonl       snapshot + journal (store.py)
  lock  owner.json  cancel        ownership and the cancel request
  logs/<task>.out.log .err.log    the task's bytes, all attempts in order
  artifacts/<task>/...            collected outputs
  context/<task>.json _run.json _deps-<task>.json
                                 ORCH_CONTEXT files (_run: tasks without dependencies; _deps:
                                 tasks sharing their dependencies, named after the first)
  metrics/<task>.jsonl            ORCH_METRICS files
  report/final_report.md
  worktrees/<task>/               git worktrees (workspace: worktree)
  slurm/wrapper.sh                the batch script of the run's Slurm jobs (executor slurm)
  slurm/<task>.<attempt>.exit     a job's exit code, written by the wrapper; .run: it started;
                      .err        the job's own stderr (slurmstepd's messages, not the task's)
```
"""

from __future__ import annotations

import os

__all__ = ["RUN_SUBDIRS", "RunLayout", "runs_dir"]

# Created with the run directory, all private (0700).
RUN_SUBDIRS = ("logs", "artifacts", "context", "metrics", "report")


def runs_dir(home: str) -> str:
    return os.path.join(home, "runs")


class RunLayout:
    """Paths of one run directory. Pure string work: nothing here touches the disk."""

    __slots__ = ("_context", "_logs", "_metrics", "artifacts", "context_dir", "logs", "root")

    def __init__(self, run_dir: str) -> None:
        self.root = run_dir
        self.logs = os.path.join(run_dir, "logs")
        self.artifacts = os.path.join(run_dir, "artifacts")
        self.context_dir = os.path.join(run_dir, "context")
        # A task's paths are built for every start: a task id has no separator (plan rule),
        # so a prefix and a concatenation give what os.path.join gives, several times faster.
        self._logs = self.logs + os.sep
        self._context = self.context_dir + os.sep
        self._metrics = os.path.join(run_dir, "metrics") + os.sep

    @classmethod
    def of(cls, home: str, run_id: str) -> RunLayout:
        return cls(os.path.join(runs_dir(home), run_id))

    @property
    def run_id(self) -> str:
        return os.path.basename(self.root)

    @property
    def state(self) -> str:
        return os.path.join(self.root, "state.json")

    @property
    def journal(self) -> str:
        return os.path.join(self.root, "journal.jsonl")

    @property
    def lock(self) -> str:
        return os.path.join(self.root, "lock")

    @property
    def owner(self) -> str:
        return os.path.join(self.root, "owner.json")

    @property
    def cancel(self) -> str:
        return os.path.join(self.root, "cancel")

    @property
    def plan(self) -> str:
        return os.path.join(self.root, "plan.yaml")

    def plan_version(self, number: int) -> str:
        """An earlier plan snapshot, kept when ``resume --plan`` replaced it."""
        return os.path.join(self.root, f"plan.{number}.yaml")

    @property
    def report(self) -> str:
        return os.path.join(self.root, "report", "final_report.md")

    def stdout_log(self, task_id: str) -> str:
        return self._logs + task_id + ".out.log"

    def stderr_log(self, task_id: str) -> str:
        return self._logs + task_id + ".err.log"

    def context(self, task_id: str) -> str:
        return self._context + task_id + ".json"

    def shared_context(self, first_task_id: str) -> str:
        """The ORCH_CONTEXT shared by every task with the same dependencies, named after the
        first of them in the plan (a task id never starts with '_')."""
        return os.path.join(self.context_dir, f"_deps-{first_task_id}.json")

    @property
    def run_context(self) -> str:
        """The ORCH_CONTEXT shared by tasks without dependencies (a task id starts with a
        letter or digit, so no task's file has this name)."""
        return os.path.join(self.context_dir, "_run.json")

    @property
    def metrics_dir(self) -> str:
        return os.path.join(self.root, "metrics")

    def metrics(self, task_id: str) -> str:
        return self._metrics + task_id + ".jsonl"

    def worktree(self, task_id: str) -> str:
        return os.path.join(self.root, "worktrees", task_id)

    @property
    def slurm_dir(self) -> str:
        return os.path.join(self.root, "slurm")

    @property
    def slurm_wrapper(self) -> str:
        return os.path.join(self.root, "slurm", "wrapper.sh")

    def slurm_job(self, task_id: str, attempt: int) -> str:
        """The stem of an attempt's job files: ``.exit`` (its exit code, written by the
        wrapper), ``.run`` (the command started), ``.err`` (Slurm's own messages)."""
        return os.path.join(self.root, "slurm", f"{task_id}.{attempt}")
