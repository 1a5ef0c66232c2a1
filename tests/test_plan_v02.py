"""orch.plan and orch.model for the Release 0.2 plan keys: defaults, pools, budget, executor,
idle_timeout_sec, retry_on, the mapping form of retry_backoff_sec, run_when, allow_failure,
require_outputs, workspace, worktree_from, metrics and slurm.

Every error is asserted as the whole message, FILE:LINE:COL included."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.errors import PlanError
from orch.model import Backoff, Plan, RetryRule, SlurmOptions, Task
from orch.plan import describe_plan, describe_task, load_plan, parse_plan

VALID = Path(__file__).resolve().parent / "data" / "plans" / "valid"


def plan(text: str) -> Plan:
    return parse_plan(textwrap.dedent(text), "p.yaml")


def errors(text: str) -> str:
    with pytest.raises(PlanError) as info:
        parse_plan(textwrap.dedent(text), "p.yaml")
    assert info.value.exit_code == 2
    return str(info.value)


def lines(*messages: str) -> str:
    return "\n".join(messages)


def task(text: str) -> Task:
    """The one task of a one-task plan whose task mapping is ``text`` (flow style)."""
    return plan(f"tasks:\n  - {{id: a, cmd: x, {text}}}\n").tasks[0]


# --- a 0.1 plan is unchanged ----------------------------------------------------------------


def test_a_plan_without_02_keys_gives_the_same_task_values_as_before() -> None:
    loaded, _ = load_plan(str(VALID / "full.yaml"))
    assert loaded.tasks[1] == Task(
        id="build",
        cmd=("python3", "tools/fake_agent.py", "build", "--out", "dist dir/app"),
        depends_on=("inspect",),
        cwd="sub/dir",
        env={"KEY": "VALUE", "MODE": "release", "EMPTY": "", "PORT": "8080"},
        timeout_sec=60.0,
        retries=2,
        retry_backoff_sec=(1.0, 3.0, 10.5),
        outputs=("dist/**", "report.json"),
    )
    for t in loaded.tasks:
        assert (t.pool, t.idle_timeout_sec, t.retry_on, t.backoff) == (None, None, (), None)
        assert (t.run_when, t.allow_failure, t.require_outputs) == ("success", False, False)
        assert (t.workspace, t.worktree_from, t.metrics, t.slurm) == (None, None, None, None)
    assert (loaded.pools, loaded.max_cost_usd, loaded.executor) == ({}, None, "local")
    assert [describe_task(t) for t in plan("tasks: [{id: a, cmd: x}]").tasks] == [""]
    assert describe_plan(loaded) == ""


def test_new_model_fields_default_to_01_behaviour() -> None:
    t = Task(id="a", cmd=("x",))
    assert t.backoff_before(2) == 0.0
    fields = {f.name: f.default for f in dataclasses.fields(Task)}
    assert fields["run_when"] == "success"
    assert fields["retry_on"] == ()
    assert Plan(tasks=(t,)).executor == "local"


# --- every key, valid -----------------------------------------------------------------------


def test_every_02_key_valid() -> None:
    p = plan(
        """\
        defaults:
          timeout_sec: 1800
          idle_timeout_sec: 300
          retries: 2
          env: {LOG_LEVEL: info}
        pools:
          llm: 2
          gpu.a-1_x: 1
        budget:
          max_cost_usd: 5.0
        executor: slurm
        tasks:
          - id: test
            cmd: "true"
            workspace: worktree
          - id: fix
            cmd: ["claude", "-p", "fix the failing tests", "--output-format", "json"]
            depends_on: [test]
            pool: llm
            idle_timeout_sec: 120
            retry_on: [timeout, idle_timeout, 75, "output:rate.?limit"]
            retry_backoff_sec: {initial: 2, factor: 2, max: 60}
            run_when: failure
            allow_failure: false
            require_outputs: true
            outputs: [out.json]
            workspace: worktree
            worktree_from: test
            metrics: stdout-json
            slurm: {partition: debug, cpus: 2, mem_mb: 4096, time_min: 60, extra_args: []}
        """
    )
    assert (p.pools, p.max_cost_usd, p.executor) == ({"llm": 2, "gpu.a-1_x": 1}, 5.0, "slurm")
    test, fix = p.tasks
    assert test == Task(
        id="test",
        cmd=("true",),
        env={"LOG_LEVEL": "info"},
        timeout_sec=1800.0,
        retries=2,
        idle_timeout_sec=300.0,
        workspace="worktree",
    )
    assert fix == Task(
        id="fix",
        cmd=("claude", "-p", "fix the failing tests", "--output-format", "json"),
        depends_on=("test",),
        env={"LOG_LEVEL": "info"},
        timeout_sec=1800.0,
        retries=2,
        outputs=("out.json",),
        pool="llm",
        idle_timeout_sec=120.0,
        retry_on=(
            RetryRule("timeout"),
            RetryRule("idle_timeout"),
            RetryRule("exit_code", 75, 75),
            RetryRule("output", pattern="rate.?limit"),
        ),
        backoff=Backoff(initial=2.0, factor=2.0, max=60.0),
        run_when="failure",
        require_outputs=True,
        workspace="worktree",
        worktree_from="test",
        metrics="stdout-json",
        slurm=SlurmOptions(partition="debug", cpus=2, mem_mb=4096, time_min=60),
    )
    assert [r.text for r in fix.retry_on] == ["timeout", "idle_timeout", "75", "output:rate.?limit"]
    assert type(fix.idle_timeout_sec) is float and type(p.max_cost_usd) is float
    assert isinstance(fix.slurm, SlurmOptions) and fix.slurm.extra_args == ()


def test_every_retry_on_form() -> None:
    t = task(
        "retry_on: [any, exit, timeout, idle_timeout, signal, start_error, missing_outputs, 1, "
        '255, 0x4B, "exit:3", "exit:3-5", "exit:7-7", "exit:1-255", "exit:042", '
        '"output:a b", output:rate.?limit, exit, exit]'
    )
    assert [(r.kind, r.low, r.high, r.pattern, r.text) for r in t.retry_on] == [
        ("any", 0, 0, None, "any"),
        ("exit", 0, 0, None, "exit"),
        ("timeout", 0, 0, None, "timeout"),
        ("idle_timeout", 0, 0, None, "idle_timeout"),
        ("signal", 0, 0, None, "signal"),
        ("start_error", 0, 0, None, "start_error"),
        ("missing_outputs", 0, 0, None, "missing_outputs"),
        ("exit_code", 1, 1, None, "1"),
        ("exit_code", 255, 255, None, "255"),
        ("exit_code", 75, 75, None, "0x4B"),
        ("exit_code", 3, 3, None, "exit:3"),
        ("exit_code", 3, 5, None, "exit:3-5"),
        ("exit_code", 7, 7, None, "exit:7-7"),
        ("exit_code", 1, 255, None, "exit:1-255"),
        ("exit_code", 42, 42, None, "exit:042"),
        ("output", 0, 0, "a b", "output:a b"),
        ("output", 0, 0, "rate.?limit", "output:rate.?limit"),
        ("exit", 0, 0, None, "exit"),  # duplicates are fine
        ("exit", 0, 0, None, "exit"),
    ]


def test_retry_rule_text_defaults_to_the_canonical_form_and_is_not_compared() -> None:
    assert RetryRule("exit_code", 3, 3).text == "exit:3"
    assert RetryRule("exit_code", 3, 9).text == "exit:3-9"
    assert RetryRule("output", pattern="x+").text == "output:x+"
    assert RetryRule("signal").text == "signal"
    assert RetryRule("exit_code", 75, 75, text="75") == RetryRule("exit_code", 75, 75)


def test_enumerations_and_booleans_valid() -> None:
    for word in ("success", "done", "failure"):
        assert task(f"run_when: {word}").run_when == word
    assert plan("executor: local\ntasks: [{id: a, cmd: x}]").executor == "local"
    t = task("allow_failure: true, require_outputs: false, workspace: worktree")
    assert (t.allow_failure, t.require_outputs, t.workspace) == (True, False, "worktree")
    assert task("metrics: stdout-json").metrics == "stdout-json"
    assert task("idle_timeout_sec: 0.5").idle_timeout_sec == 0.5


def test_empty_pools_budget_and_slurm_are_allowed() -> None:
    p = plan("pools: {}\nbudget: {}\ntasks: [{id: a, cmd: x, slurm: {}}]")
    assert (p.pools, p.max_cost_usd, p.tasks[0].slurm) == ({}, None, SlurmOptions())


def test_slurm_every_key_and_allowed_with_the_local_executor() -> None:
    t = task(
        "slurm: {partition: debug, account: proj-1, cpus: 4, mem_mb: 8192, time_min: 90, "
        'gres: "gpu:1", extra_args: ["--qos=low", "--exclusive"]}'
    )
    assert t.slurm == SlurmOptions(
        partition="debug",
        account="proj-1",
        cpus=4,
        mem_mb=8192,
        time_min=90,
        gres="gpu:1",
        extra_args=("--qos=low", "--exclusive"),
    )


# --- backoff_before -------------------------------------------------------------------------


def test_backoff_before_list_form_is_unchanged() -> None:
    t = task("retry_backoff_sec: [1, 3, 10]")
    assert [t.backoff_before(n) for n in range(0, 7)] == [0, 0, 1, 3, 10, 10, 10]
    assert task("retry_backoff_sec: 2").backoff_before(9) == 2.0


def test_backoff_before_mapping_form() -> None:
    t = task("retry_backoff_sec: {initial: 2, factor: 3, max: 60}")
    assert [t.backoff_before(n) for n in range(1, 7)] == [0, 2, 6, 18, 54, 60]
    t = task("retry_backoff_sec: {initial: 1.5}")  # factor 2, no max
    assert [t.backoff_before(n) for n in range(2, 6)] == [1.5, 3, 6, 12]
    assert task("retry_backoff_sec: {initial: 0, factor: 5}").backoff_before(5000) == 0.0
    # Far beyond a float without max: infinite; with max: max.
    assert task("retry_backoff_sec: {initial: 1}").backoff_before(5000) == math.inf
    assert task("retry_backoff_sec: {initial: 1, max: 30}").backoff_before(5000) == 30
    assert task("retry_backoff_sec: {initial: 1, max: 0.5}").backoff_before(2) == 0.5


def test_backoff_before_jitter_takes_a_factor_in_half_to_one() -> None:
    t = task("retry_backoff_sec: {initial: 4, max: 10, jitter: true}")
    draws: Iterator[float] = iter([0.0, 1.0, 0.5, 0.999])
    assert [t.backoff_before(n, lambda: next(draws)) for n in (2, 2, 3, 9)] == [
        2.0,
        4.0,
        6.0,
        10 * (0.5 + 0.5 * 0.999),
    ]
    assert t.backoff_before(1, lambda: pytest.fail("no draw before attempt 2")) == 0.0
    for _ in range(200):  # the default random source stays within [0.5, 1] of the wait
        assert 2.0 <= t.backoff_before(2) <= 4.0
    calls: List[int] = []
    no_jitter = task("retry_backoff_sec: {initial: 4}")
    assert no_jitter.backoff_before(2, lambda: calls.append(1) or 0.0) == 4.0
    assert calls == []


# --- defaults -------------------------------------------------------------------------------


def test_defaults_apply_to_tasks_that_do_not_set_the_key_and_env_merges() -> None:
    p = plan(
        """\
        defaults:
          cmd: [echo, default]
          cwd: sub
          env: {A: "1", B: "2"}
          timeout_sec: 30
          retries: 1
          retry_backoff_sec: {initial: 1}
          run_when: done
          allow_failure: true
          retry_on: [timeout]
          slurm: {partition: p, account: acc}
          metrics: stdout-json
        tasks:
          - id: a
          - id: b
            cmd: [own]
            env: {B: "3", C: "4"}
            timeout_sec: 5
            retries: 0
            retry_backoff_sec: [7]
            run_when: success
            allow_failure: false
            retry_on: [exit]
            slurm: {cpus: 2}
        """
    )
    a, b = p.tasks
    assert a == Task(
        id="a",
        cmd=("echo", "default"),
        cwd="sub",
        env={"A": "1", "B": "2"},
        timeout_sec=30.0,
        retries=1,
        backoff=Backoff(initial=1.0),
        run_when="done",
        allow_failure=True,
        retry_on=(RetryRule("timeout"),),
        slurm=SlurmOptions(partition="p", account="acc"),
        metrics="stdout-json",
    )
    # The task's own value wins; env key by key; slurm as a whole mapping.
    assert b == Task(
        id="b",
        cmd=("own",),
        cwd="sub",
        env={"A": "1", "B": "3", "C": "4"},
        timeout_sec=5.0,
        retries=0,
        retry_backoff_sec=(7.0,),
        run_when="success",
        allow_failure=False,
        retry_on=(RetryRule("exit"),),
        slurm=SlurmOptions(cpus=2),
        metrics="stdout-json",
    )
    assert a.env is not b.env


def test_defaults_forbidden_and_unknown_keys() -> None:
    assert errors(
        """\
        defaults:
          id: x
          depends_on: [a]
          outputs: [x]
          needs: [a]
          timeuot_sec: 3
          goal: g
          7: x
        tasks:
          - {id: a, cmd: x}
        """
    ) == lines(
        "p.yaml:2:3: defaults: 'id' cannot have a default: set it on each task",
        "p.yaml:3:3: defaults: 'depends_on' cannot have a default: set it on each task",
        "p.yaml:4:3: defaults: 'outputs' cannot have a default: set it on each task",
        "p.yaml:5:3: defaults: unknown key 'needs' (did you mean 'depends_on'? it cannot have "
        "a default: set it on each task)",
        "p.yaml:6:3: defaults: unknown key 'timeuot_sec' (did you mean 'timeout_sec'?)",
        "p.yaml:7:3: defaults: unknown key 'goal' ('goal' is a top-level key, not a task key)",
        "p.yaml:8:3: defaults: unknown key 7 (allowed keys: cmd, cwd, env, timeout_sec, retries, "
        "retry_backoff_sec, pool, idle_timeout_sec, retry_on, run_when, allow_failure, "
        "require_outputs, workspace, worktree_from, metrics, slurm)",
    )


def test_defaults_problems_are_reported_once_at_the_defaults() -> None:
    assert errors(
        """\
        defaults:
          timeout_sec: 0
          pool: nope
          retries: "2"
          env: {A: 1, "B=C": x}
          retry_on: [exitt]
          cmd: ["", x]
        tasks:
          - {id: a}
          - {id: b, cmd: y}
          - {id: c, cmd: y}
        """
    ) == lines(
        "p.yaml:2:16: defaults: timeout_sec must be a number > 0, got integer 0",
        "p.yaml:3:9: defaults: pool 'nope' is not defined: add it to the top-level pools "
        "(pools: {nope: N})",
        "p.yaml:4:12: defaults: retries must be an integer >= 0, got string '2': remove the quotes",
        "p.yaml:5:12: defaults: env value for 'A' must be a string, got a number: quote it",
        "p.yaml:5:15: defaults: env name 'B=C' must not contain '='",
        "p.yaml:6:14: defaults: retry_on[0]: unknown item 'exitt' (did you mean 'exit'?)",
        "p.yaml:7:9: defaults: cmd[0] (the program) must not be empty",
    )


def test_defaults_must_be_a_mapping() -> None:
    assert errors("defaults: [timeout_sec]\ntasks: [{id: a, cmd: x}]\n") == (
        "p.yaml:1:11: defaults must be a mapping of task keys to values, got a list"
    )
    assert errors("defaults:\ntasks: [{id: a, cmd: x}]\n") == (
        "p.yaml:1:10: defaults must be a mapping of task keys to values, got null"
    )


def test_cmd_from_defaults_satisfies_the_required_cmd() -> None:
    assert plan("defaults: {cmd: make}\ntasks: [{id: a}]").tasks[0].cmd == ("make",)
    assert errors("defaults: {timeout_sec: 1}\ntasks: [{id: a}]\n") == (
        "p.yaml:2:9: task 'a': missing required key 'cmd'"
    )


def test_task_keys_at_the_top_level_point_to_tasks_or_defaults() -> None:
    assert errors("timeout_sec: 5\noutputs: [x]\ntasks: [{id: a, cmd: x}]\n") == lines(
        "p.yaml:1:1: unknown top-level key 'timeout_sec' ('timeout_sec' belongs to a task: "
        "put it under an entry of 'tasks' or under 'defaults')",
        "p.yaml:2:1: unknown top-level key 'outputs' ('outputs' belongs to a task: "
        "put it under an entry of 'tasks')",
    )


# --- key suggestions ------------------------------------------------------------------------


def test_did_you_mean_for_02_task_keys() -> None:
    assert errors(
        """\
        tasks:
          - id: a
            cmd: x
            needs: [b]
            idle_timeout: 5
            retry_if: [timeout]
            when: done
            continue_on_error: true
            allowed_failure: true
            pools: p
            worktree: x
            required_outputs: true
            sbatch: {}
            metric: stdout-json
            budget: 3
            idle_timeout_secs: 5
          - {id: b, cmd: x}
        """
    ) == lines(
        "p.yaml:4:5: task 'a': unknown key 'needs' (did you mean 'depends_on'?)",
        "p.yaml:5:5: task 'a': unknown key 'idle_timeout' (did you mean 'idle_timeout_sec'?)",
        "p.yaml:6:5: task 'a': unknown key 'retry_if' (did you mean 'retry_on'?)",
        "p.yaml:7:5: task 'a': unknown key 'when' (did you mean 'run_when'?)",
        "p.yaml:8:5: task 'a': unknown key 'continue_on_error' (did you mean 'allow_failure'?)",
        "p.yaml:9:5: task 'a': unknown key 'allowed_failure' (did you mean 'allow_failure'?)",
        "p.yaml:10:5: task 'a': unknown key 'pools' (did you mean 'pool'?)",
        "p.yaml:11:5: task 'a': unknown key 'worktree' (did you mean 'workspace'?)",
        "p.yaml:12:5: task 'a': unknown key 'required_outputs' (did you mean 'require_outputs'?)",
        "p.yaml:13:5: task 'a': unknown key 'sbatch' (did you mean 'slurm'?)",
        "p.yaml:14:5: task 'a': unknown key 'metric' (did you mean 'metrics'?)",
        "p.yaml:15:5: task 'a': unknown key 'budget' ('budget' is a top-level key, not a task key)",
        "p.yaml:16:5: task 'a': unknown key 'idle_timeout_secs' (did you mean 'idle_timeout_sec'?)",
    )


def test_did_you_mean_for_02_top_level_keys() -> None:
    assert errors(
        """\
        default: {retries: 1}
        pool: {a: 1}
        concurrency: {a: 1}
        max_cost_usd: 3
        executer: local
        tasks: [{id: a, cmd: x}]
        """
    ) == lines(
        "p.yaml:1:1: unknown top-level key 'default' (did you mean 'defaults'?)",
        "p.yaml:2:1: unknown top-level key 'pool' ('pool' belongs to a task: put it under an "
        "entry of 'tasks' or under 'defaults')",
        "p.yaml:3:1: unknown top-level key 'concurrency' (did you mean 'pools'?)",
        "p.yaml:4:1: unknown top-level key 'max_cost_usd' (did you mean 'budget'?)",
        "p.yaml:5:1: unknown top-level key 'executer' (did you mean 'executor'?)",
    )


# --- pools ----------------------------------------------------------------------------------


def test_bad_pools() -> None:
    assert errors(
        """\
        pools:
          llm: 2
          "a b": 1
          gpu: 0
          cpu: "3"
          x: true
          y:
          LLM: 1
          1: 2
          "-z": 1
          big: 1.5
          "": 1
        tasks: [{id: a, cmd: x}]
        """
    ) == lines(
        "p.yaml:3:3: pool name 'a b' contains ' ': use only ASCII letters, digits, '.', '_' "
        "and '-'",
        "p.yaml:4:8: pool 'gpu' limit must be an integer >= 1, got integer 0",
        "p.yaml:5:8: pool 'cpu' limit must be an integer >= 1, got string '3': remove the quotes",
        "p.yaml:6:6: pool 'x' limit must be an integer >= 1, got boolean true",
        "p.yaml:7:5: pool 'y' limit must be an integer >= 1, got null",
        "p.yaml:8:3: pool name 'LLM' clashes with 'llm' (pool names must be unique ignoring case)",
        'p.yaml:9:3: pool name 1 must be a string: quote it ("1")',
        "p.yaml:10:3: pool name '-z' must start with an ASCII letter or digit",
        "p.yaml:11:8: pool 'big' limit must be an integer >= 1, got number 1.5",
        "p.yaml:12:3: pool name must not be empty",
    )


def test_pools_not_a_mapping_and_a_long_pool_name() -> None:
    long_name = "p" * 129
    assert (
        errors(f"pools: {{{long_name}: 1}}\ntasks: [{{id: a, cmd: x}}]\n")
        == "p.yaml:1:9: pool name must be at most 128 characters, got 129"
    )
    # A broken `pools` does not make every `pool:` an error too.
    assert errors("pools: [llm]\ntasks: [{id: a, cmd: x, pool: llm}]\n") == (
        "p.yaml:1:8: pools must be a mapping of pool names to task limits, got a list"
    )


def test_unknown_pool_with_a_suggestion() -> None:
    assert errors(
        """\
        pools: {llm: 2, gpu: 1}
        tasks:
          - {id: a, cmd: x, pool: lm}
          - {id: b, cmd: x, pool: LLM}
          - {id: c, cmd: x, pool: zzz}
          - {id: d, cmd: x, pool: 1}
          - {id: e, cmd: x, pool: ""}
          - {id: f, cmd: x, pool: null}
        """
    ) == lines(
        "p.yaml:3:27: task 'a': pool 'lm' is not defined in pools (did you mean 'llm'?)",
        "p.yaml:4:27: task 'b': pool 'LLM' is not defined in pools (did you mean 'llm'?)",
        "p.yaml:5:27: task 'c': pool 'zzz' is not defined in pools (defined: llm, gpu)",
        "p.yaml:6:27: task 'd': pool must be a pool name: quote it (\"1\")",
        "p.yaml:7:27: task 'e': pool must be a pool name, got an empty string",
        "p.yaml:8:27: task 'f': pool must be a pool name, got null",
    )


def test_pool_without_any_pools() -> None:
    assert errors("tasks: [{id: a, cmd: x, pool: llm}]\n") == (
        "p.yaml:1:31: task 'a': pool 'llm' is not defined: add it to the top-level pools "
        "(pools: {llm: N})"
    )


# --- budget and executor --------------------------------------------------------------------


def test_budget_errors() -> None:
    assert errors("budget: {max_cost_usd: 0, max_usd: 3}\ntasks: [{id: a, cmd: x}]\n") == lines(
        "p.yaml:1:24: budget.max_cost_usd must be a number > 0, got integer 0",
        "p.yaml:1:27: unknown budget key 'max_usd' (did you mean 'max_cost_usd'?)",
    )
    for value, problem in [
        ('"5"', "must be a number > 0, got string '5': remove the quotes"),
        (".inf", "must be a finite number > 0, got number .inf"),
        ("-1.5", "must be a number > 0, got number -1.5"),
        ("true", "must be a number > 0, got boolean true"),
        ("null", "must be a number > 0, got null"),
    ]:
        text = f"budget: {{max_cost_usd: {value}}}\ntasks: [{{id: a, cmd: x}}]\n"
        assert errors(text) == f"p.yaml:1:24: budget.max_cost_usd {problem}"
    assert errors("budget: 5\ntasks: [{id: a, cmd: x}]\n") == (
        "p.yaml:1:9: budget must be a mapping with max_cost_usd, got integer 5"
    )


def test_executor_errors() -> None:
    for value, got in [
        ("slrum", "got string 'slrum' (did you mean 'slurm'?)"),
        ("Local", "got string 'Local' (did you mean 'local'?)"),
        ("1", "got integer 1"),
        ("null", "got null"),
        ("k8s", "got string 'k8s'"),
    ]:
        assert errors(f"executor: {value}\ntasks: [{{id: a, cmd: x}}]\n") == (
            f"p.yaml:1:11: executor must be local or slurm, {got}"
        )


# --- task keys ------------------------------------------------------------------------------


def test_bad_idle_timeout_sec() -> None:
    assert errors(
        """\
        tasks:
          - {id: a, cmd: x, idle_timeout_sec: 0}
          - {id: b, cmd: x, idle_timeout_sec: "120s"}
          - {id: c, cmd: x, idle_timeout_sec: true}
          - {id: d, cmd: x, idle_timeout_sec: -.inf}
          - {id: e, cmd: x, idle_timeout_sec: null}
          - {id: f, cmd: x, idle_timeout_sec: "30"}
        """
    ) == lines(
        "p.yaml:2:39: task 'a': idle_timeout_sec must be a number > 0, got integer 0",
        "p.yaml:3:39: task 'b': idle_timeout_sec must be a number > 0, got string '120s': "
        "write 120 (seconds, without a unit)",
        "p.yaml:4:39: task 'c': idle_timeout_sec must be a number > 0, got boolean true",
        "p.yaml:5:39: task 'd': idle_timeout_sec must be a finite number > 0, got number -.inf",
        "p.yaml:6:39: task 'e': idle_timeout_sec must be a number > 0, got null",
        "p.yaml:7:39: task 'f': idle_timeout_sec must be a number > 0, got string '30': "
        "remove the quotes",
    )


ACCEPTED = (
    "accepted: any, exit, an exit code 1..255, exit:N, exit:N-M, timeout, idle_timeout, "
    "signal, start_error, missing_outputs, output:REGEX"
)


@pytest.mark.parametrize(
    "item, message",
    [
        ("exitt", "retry_on[0]: unknown item 'exitt' (did you mean 'exit'?)"),
        ("Timeout", "retry_on[0]: unknown item 'Timeout' (did you mean 'timeout'?)"),
        ("timed_out", "retry_on[0]: unknown item 'timed_out' (did you mean 'timeout'?)"),
        ("idle", "retry_on[0]: unknown item 'idle' (did you mean 'idle_timeout'?)"),
        ("signall", "retry_on[0]: unknown item 'signall' (did you mean 'signal'?)"),
        ("exit_code", "retry_on[0]: unknown item 'exit_code' (did you mean 'exit'?)"),
        ('"exit=3"', "retry_on[0]: unknown item 'exit=3' (did you mean 'exit:3'?)"),
        ('"output rate"', "retry_on[0]: unknown item 'output rate' (did you mean 'output:rate'?)"),
        ("foo", f"retry_on[0]: unknown item 'foo' ({ACCEPTED})"),
        ('""', "retry_on[0] must not be empty"),
        ('"exit:300"', "retry_on[0] 'exit:300': exit code must be 1..255"),
        ('"exit:0"', "retry_on[0] 'exit:0': exit code must be 1..255"),
        ('"exit:0-5"', "retry_on[0] 'exit:0-5': exit code must be 1..255"),
        ('"exit:1-256"', "retry_on[0] 'exit:1-256': exit code must be 1..255"),
        ('"exit:9-3"', "retry_on[0] 'exit:9-3': the range must go from low to high (exit:3-9)"),
        ('"exit:x"', "retry_on[0] 'exit:x': write exit:N or exit:N-M (exit codes 1..255)"),
        ('"exit:"', "retry_on[0] 'exit:': write exit:N or exit:N-M (exit codes 1..255)"),
        ('"exit:-3"', "retry_on[0] 'exit:-3': write exit:N or exit:N-M (exit codes 1..255)"),
        ('"exit: 3"', "retry_on[0] 'exit: 3': write exit:N or exit:N-M (exit codes 1..255)"),
        (
            '"output:("',
            "retry_on[0] 'output:(': invalid regular expression: missing ), unterminated "
            "subpattern at position 0",
        ),
        (
            '"output:[a"',
            "retry_on[0] 'output:[a': invalid regular expression: unterminated character set "
            "at position 0",
        ),
        ('"output:"', "retry_on[0] 'output:': write a regular expression after 'output:'"),
        (
            '"75"',
            "retry_on[0] '75': remove the quotes (an exit code is an integer), or write 'exit:75'",
        ),
        ("0", "retry_on[0] must be an exit code 1..255, got integer 0"),
        ("256", "retry_on[0] must be an exit code 1..255, got integer 256"),
        ("-1", "retry_on[0] must be an exit code 1..255, got integer -1"),
        ("true", "retry_on[0] must be a retry kind or an exit code 1..255, got boolean true"),
        ("1.5", "retry_on[0] must be a retry kind or an exit code 1..255, got number 1.5"),
        ("75.0", "retry_on[0] must be a retry kind or an exit code 1..255, got number 75.0"),
        ("null", "retry_on[0] must be a retry kind or an exit code 1..255, got null"),
        ("[1]", "retry_on[0] must be a retry kind or an exit code 1..255, got a list"),
        (
            "{exit: 3}",
            "retry_on[0] must be a retry kind or an exit code 1..255, got a mapping: quote it "
            '("exit:3")',
        ),
    ],
)
def test_bad_retry_on_item(item: str, message: str) -> None:
    assert errors(f"tasks:\n  - id: a\n    cmd: x\n    retry_on: [{item}]\n") == (
        f"p.yaml:4:16: task 'a': {message}"
    )


def test_bad_retry_on_list_reports_every_item() -> None:
    assert errors(
        """\
        tasks:
          - {id: a, cmd: x, retry_on: timeout}
          - {id: b, cmd: x, retry_on: []}
          - {id: c, cmd: x, retry_on: null}
          - {id: d, cmd: x, retry_on: [timeout, exitt, 300, "exit:3", "output:("]}
        """
    ) == lines(
        "p.yaml:2:31: task 'a': retry_on must be a non-empty list of retry kinds, "
        "got string 'timeout': write [\"timeout\"]",
        "p.yaml:3:31: task 'b': retry_on must not be an empty list (leave it out to retry any "
        "failure)",
        "p.yaml:4:31: task 'c': retry_on must be a non-empty list of retry kinds, got null",
        "p.yaml:5:41: task 'd': retry_on[1]: unknown item 'exitt' (did you mean 'exit'?)",
        "p.yaml:5:48: task 'd': retry_on[2] must be an exit code 1..255, got integer 300",
        "p.yaml:5:63: task 'd': retry_on[4] 'output:(': invalid regular expression: missing ), "
        "unterminated subpattern at position 0",
    )


def test_bad_backoff_mappings() -> None:
    assert errors(
        """\
        tasks:
          - id: a
            cmd: x
            retry_backoff_sec: {initial: -1, factor: 0.5, max: "60s", jitter: "true", cap: 3}
          - id: b
            cmd: x
            retry_backoff_sec: {factor: 2}
          - id: c
            cmd: x
            retry_backoff_sec: {}
          - id: d
            cmd: x
            retry_backoff_sec: {initial: .nan, factor: .inf, max: null, jitter: yes, fator: 3}
          - id: e
            cmd: x
            retry_backoff_sec: {first: 1, jitter: 1, 5: x, max: -1}
        """
    ) == lines(
        "p.yaml:4:34: task 'a': retry_backoff_sec.initial must be a number >= 0, got integer -1",
        "p.yaml:4:46: task 'a': retry_backoff_sec.factor must be a number >= 1, got number 0.5",
        "p.yaml:4:56: task 'a': retry_backoff_sec.max must be a number >= 0, got string '60s': "
        "write 60 (seconds, without a unit)",
        "p.yaml:4:71: task 'a': retry_backoff_sec.jitter must be true or false, got string "
        "'true': remove the quotes",
        "p.yaml:4:79: task 'a': unknown retry_backoff_sec key 'cap' (did you mean 'max'?)",
        "p.yaml:7:24: task 'b': retry_backoff_sec needs 'initial' (the seconds before the first "
        "retry)",
        "p.yaml:10:24: task 'c': retry_backoff_sec needs 'initial' (the seconds before the first "
        "retry)",
        "p.yaml:13:34: task 'd': retry_backoff_sec.initial must be a finite number >= 0, got "
        "number .nan",
        "p.yaml:13:48: task 'd': retry_backoff_sec.factor must be a finite number >= 1, got "
        "number .inf",
        "p.yaml:13:59: task 'd': retry_backoff_sec.max must be a number >= 0, got null",
        "p.yaml:13:73: task 'd': retry_backoff_sec.jitter must be true or false, got string "
        "'yes' (YAML 1.2 reads yes as a string): write true",
        "p.yaml:13:78: task 'd': unknown retry_backoff_sec key 'fator' (did you mean 'factor'?)",
        "p.yaml:16:25: task 'e': unknown retry_backoff_sec key 'first' (did you mean 'initial'?)",
        "p.yaml:16:43: task 'e': retry_backoff_sec.jitter must be true or false, got integer 1",
        "p.yaml:16:46: task 'e': unknown retry_backoff_sec key 5 (allowed keys: initial, factor, "
        "max, jitter)",
        "p.yaml:16:57: task 'e': retry_backoff_sec.max must be a number >= 0, got integer -1",
    )


def test_backoff_mapping_edges_are_valid() -> None:
    t = task("retry_backoff_sec: {initial: 0, factor: 1, max: 0, jitter: false}")
    assert t.backoff == Backoff(initial=0.0, factor=1.0, max=0.0, jitter=False)
    assert t.retry_backoff_sec == ()
    assert all(type(v) is float for v in (t.backoff.initial, t.backoff.factor, t.backoff.max))
    # max below initial is allowed: every wait is then max.
    assert task("retry_backoff_sec: {initial: 10, max: 1}").backoff_before(2) == 1.0


def test_bad_enumerations_and_booleans() -> None:
    assert errors(
        """\
        tasks:
          - id: e
            cmd: x
            run_when: sucess
            workspace: tree
            metrics: json
            allow_failure: "true"
            require_outputs: yes
          - id: f
            cmd: x
            run_when: always
            workspace: git_worktree
            metrics: stdout_json
            allow_failure: 1
            require_outputs: null
          - id: g
            cmd: x
            run_when: 3
            workspace: null
            metrics: ""
            allow_failure: "False"
            require_outputs: "off"
        """
    ) == lines(
        "p.yaml:4:15: task 'e': run_when must be success, done or failure, got string 'sucess' "
        "(did you mean 'success'?)",
        "p.yaml:5:16: task 'e': workspace must be worktree, got string 'tree' (did you mean "
        "'worktree'?)",
        "p.yaml:6:14: task 'e': metrics must be stdout-json, got string 'json' (did you mean "
        "'stdout-json'?)",
        "p.yaml:7:20: task 'e': allow_failure must be true or false, got string 'true': remove "
        "the quotes",
        "p.yaml:8:22: task 'e': require_outputs must be true or false, got string 'yes' (YAML 1.2 "
        "reads yes as a string): write true",
        "p.yaml:11:15: task 'f': run_when must be success, done or failure, got string 'always' "
        "(did you mean 'done'?)",
        "p.yaml:12:16: task 'f': workspace must be worktree, got string 'git_worktree' (did you "
        "mean 'worktree'?)",
        "p.yaml:13:14: task 'f': metrics must be stdout-json, got string 'stdout_json' (did you "
        "mean 'stdout-json'?)",
        "p.yaml:14:20: task 'f': allow_failure must be true or false, got integer 1",
        "p.yaml:15:22: task 'f': require_outputs must be true or false, got null",
        "p.yaml:18:15: task 'g': run_when must be success, done or failure, got integer 3",
        "p.yaml:19:16: task 'g': workspace must be worktree, got null",
        "p.yaml:20:14: task 'g': metrics must be stdout-json, got an empty string",
        "p.yaml:21:20: task 'g': allow_failure must be true or false, got string 'False': remove "
        "the quotes",
        "p.yaml:22:22: task 'g': require_outputs must be true or false, got string 'off' (YAML "
        "1.2 reads off as a string): write false",
    )


def test_slurm_errors() -> None:
    assert errors(
        """\
        tasks:
          - id: a
            cmd: x
            slurm:
              partition: 5
              account: ""
              cpus: 0
              mem_mb: "4G"
              time_min: 1.5
              gres: null
              extra_args: "--qos=low"
              cpu: 2
              nodes: 2
          - id: b
            cmd: x
            slurm: {extra_args: [--qos, 3, "", true], mem_mb: "4096", time_min: true, cpus: -1}
          - {id: c, cmd: x, slurm: []}
          - {id: d, cmd: x, slurm: null}
          - {id: e, cmd: x, slurm: {mem_mb: 1.5G, time_min: "60"}}
        """
    ) == lines(
        "p.yaml:5:18: task 'a': slurm.partition must be a string: quote it (\"5\")",
        "p.yaml:6:16: task 'a': slurm.account must not be empty",
        "p.yaml:7:13: task 'a': slurm.cpus must be an integer >= 1, got integer 0",
        "p.yaml:8:15: task 'a': slurm.mem_mb must be an integer >= 1, got string '4G': write "
        "4096 (megabytes, without a unit)",
        "p.yaml:9:17: task 'a': slurm.time_min must be an integer >= 1, got number 1.5",
        "p.yaml:10:13: task 'a': slurm.gres must be a string, got null",
        "p.yaml:11:19: task 'a': slurm.extra_args must be a list of strings, got string "
        "'--qos=low': write [\"--qos=low\"]",
        "p.yaml:12:7: task 'a': unknown slurm key 'cpu' (did you mean 'cpus'?)",
        "p.yaml:13:7: task 'a': unknown slurm key 'nodes' (allowed keys: partition, account, "
        "cpus, mem_mb, time_min, gres, extra_args)",
        "p.yaml:16:33: task 'b': slurm.extra_args[1] must be a string: quote it (\"3\")",
        "p.yaml:16:36: task 'b': slurm.extra_args[2] must not be empty",
        "p.yaml:16:40: task 'b': slurm.extra_args[3] must be a string: quote it (\"true\")",
        "p.yaml:16:55: task 'b': slurm.mem_mb must be an integer >= 1, got string '4096': "
        "remove the quotes",
        "p.yaml:16:73: task 'b': slurm.time_min must be an integer >= 1, got boolean true",
        "p.yaml:16:85: task 'b': slurm.cpus must be an integer >= 1, got integer -1",
        "p.yaml:17:28: task 'c': slurm must be a mapping of sbatch options, got a list",
        "p.yaml:18:28: task 'd': slurm must be a mapping of sbatch options, got null",
        "p.yaml:19:37: task 'e': slurm.mem_mb must be an integer >= 1, got string '1.5G': write "
        "1536 (megabytes, without a unit)",
        "p.yaml:19:53: task 'e': slurm.time_min must be an integer >= 1, got string '60': remove "
        "the quotes",
    )


# --- worktree_from --------------------------------------------------------------------------


def test_worktree_from_valid() -> None:
    p = plan(
        """\
        defaults: {workspace: worktree}
        tasks:
          - {id: base, cmd: x}
          - {id: next, cmd: x, depends_on: [base], worktree_from: base}
        """
    )
    assert [(t.workspace, t.worktree_from) for t in p.tasks] == [
        ("worktree", None),
        ("worktree", "base"),
    ]


def test_worktree_from_errors() -> None:
    assert errors(
        """\
        tasks:
          - {id: base, cmd: x, workspace: worktree}
          - {id: plain, cmd: x}
          - {id: a, cmd: x, depends_on: [base], worktree_from: base}
          - {id: b, cmd: x, workspace: worktree, worktree_from: base}
          - {id: c, cmd: x, workspace: worktree, depends_on: [plain], worktree_from: plain}
          - {id: d, cmd: x, workspace: worktree, depends_on: [base], worktree_from: bsae}
          - {id: e, cmd: x, workspace: worktree, worktree_from: e}
          - {id: f, cmd: x, workspace: worktree, depends_on: [base], worktree_from: 5}
          - {id: g, cmd: x, workspace: worktree, depends_on: [base], worktree_from: nothere}
          - {id: h, cmd: x, workspace: worktree, depends_on: [base], worktree_from: ""}
        """
    ) == lines(
        "p.yaml:4:56: task 'a': worktree_from needs workspace: worktree on this task",
        "p.yaml:5:57: task 'b': worktree_from names 'base', which is not in depends_on: add it "
        "there",
        "p.yaml:6:78: task 'c': worktree_from names 'plain', which has no worktree: set "
        "workspace: worktree on it",
        "p.yaml:7:77: task 'd': worktree_from names unknown task 'bsae' (did you mean 'base'?)",
        "p.yaml:8:57: task 'e': worktree_from cannot name the task itself",
        "p.yaml:9:77: task 'f': worktree_from must be a task id: quote it (\"5\")",
        "p.yaml:10:77: task 'g': worktree_from names unknown task 'nothere'",
        "p.yaml:11:77: task 'h': worktree_from must be a task id, got an empty string",
    )


def test_worktree_from_in_defaults_is_checked_for_each_task_at_the_task() -> None:
    assert errors(
        """\
        defaults:
          workspace: worktree
          worktree_from: base
        tasks:
          - {id: base, cmd: x}
          - {id: a, cmd: x, depends_on: [base]}
          - {id: b, cmd: x}
        """
    ) == lines(
        "p.yaml:5:5: task 'base': worktree_from (from defaults) cannot name the task itself",
        "p.yaml:7:5: task 'b': worktree_from (from defaults) names 'base', which is not in "
        "depends_on: add it there",
    )


# --- everything at once ---------------------------------------------------------------------


def test_problems_of_every_kind_are_reported_together_sorted() -> None:
    message = errors(
        """\
        defaults: {retries: -1}
        pools: {llm: 0}
        budget: {max_cost: 1}
        executor: cloud
        tasks:
          - {id: a, cmd: x, pool: gpu, run_when: never, retry_on: [exitt]}
        """
    )
    assert message == lines(
        "p.yaml:1:21: defaults: retries must be an integer >= 0, got integer -1",
        "p.yaml:2:14: pool 'llm' limit must be an integer >= 1, got integer 0",
        "p.yaml:3:10: unknown budget key 'max_cost' (did you mean 'max_cost_usd'?)",
        "p.yaml:4:11: executor must be local or slurm, got string 'cloud'",
        "p.yaml:6:27: task 'a': pool 'gpu' is not defined in pools (defined: llm)",
        "p.yaml:6:42: task 'a': run_when must be success, done or failure, got string 'never'",
        "p.yaml:6:60: task 'a': retry_on[0]: unknown item 'exitt' (did you mean 'exit'?)",
    )


# --- describe (validate / dry-run output) ---------------------------------------------------


def test_describe_shows_effective_values_compactly_and_env_names_only() -> None:
    p = plan(
        """\
        defaults: {retries: 2, env: {TOKEN: "s3cr3t"}}
        pools: {llm: 2}
        budget: {max_cost_usd: 2.5}
        executor: slurm
        tasks:
          - {id: plain, cmd: x, retries: 0, env: {}}
          - id: fix
            cmd: x
            cwd: "my dir"
            pool: llm
            idle_timeout_sec: 120
            retry_on: [timeout, idle_timeout, 75, "output:rate limit"]
            retry_backoff_sec: {initial: 2, max: 60.5, jitter: true}
            run_when: failure
            allow_failure: true
            outputs: [out.json]
            require_outputs: true
            workspace: worktree
            metrics: stdout-json
            slurm: {partition: debug, cpus: 2, extra_args: [--qos, "a b"]}
        """
    )
    plain, fix = p.tasks
    assert describe_task(plain) == "env=[TOKEN]"
    assert describe_task(fix) == (
        'cwd="my dir" env=[TOKEN] pool=llm idle_timeout_sec=120 retries=2 '
        'retry_on=[timeout, idle_timeout, 75, "output:rate limit"] '
        "retry_backoff_sec={initial: 2, factor: 2, max: 60.5, jitter: true} run_when=failure "
        "allow_failure=true outputs=[out.json] require_outputs=true workspace=worktree "
        'metrics=stdout-json slurm={partition: debug, cpus: 2, extra_args: [--qos, "a b"]}'
    )
    assert "s3cr3t" not in describe_task(fix) + describe_task(plain)
    assert describe_plan(p) == "executor=slurm pools={llm: 2} max_cost_usd=2.5"


# --- any value for any 0.2 key: a Plan or a PlanError, never another exception ----------------

WORDS = [
    *["any", "exit", "timeout", "idle_timeout", "signal", "start_error", "missing_outputs"],
    *["exit:3", "exit:3-5", "exit:0", "exit:9-3", "output:(", "output:x+", "output:", "75"],
    *["success", "done", "failure", "worktree", "stdout-json", "local", "slurm", "llm", "a"],
    *["initial", "factor", "max", "jitter", "partition", "cpus", "mem_mb", "4G", "true", ""],
]
V02_KEYS = [
    *["pool", "idle_timeout_sec", "retry_on", "retry_backoff_sec", "run_when", "allow_failure"],
    *["require_outputs", "workspace", "worktree_from", "metrics", "slurm", "env", "cmd"],
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-300, 300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(WORDS + V02_KEYS), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    task_values=st.dictionaries(st.sampled_from(V02_KEYS), VALUES, max_size=4),
    default_values=st.dictionaries(st.sampled_from(V02_KEYS), VALUES, max_size=3),
    top=st.dictionaries(st.sampled_from(["pools", "budget", "executor"]), VALUES, max_size=3),
)
def test_any_value_for_any_02_key_is_a_plan_or_a_plan_error(
    task_values: Dict[str, Any], default_values: Dict[str, Any], top: Dict[str, Any]
) -> None:
    doc: Dict[str, Any] = dict(top)
    if default_values:
        doc["defaults"] = default_values
    doc["tasks"] = [
        {"id": "a", "cmd": "x", "workspace": "worktree"},
        {"id": "b", "cmd": "x", "depends_on": ["a"], **task_values},
    ]
    try:
        p = parse_plan(json.dumps(doc), "p.json")
    except PlanError as err:
        assert err.problems
        assert all(pr.line is not None and pr.col is not None for pr in err.problems), err
        return
    for t in p.tasks:
        assert isinstance(t.retry_on, tuple)
        assert all(isinstance(r, RetryRule) for r in t.retry_on)
        assert t.run_when in ("success", "done", "failure")
        assert t.pool is None or t.pool in p.pools
        assert t.backoff is None or not t.retry_backoff_sec
        assert t.backoff_before(3, lambda: 0.5) >= 0
        assert isinstance(describe_task(t), str)
