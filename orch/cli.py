"""Command line: argparse front end, the only place that prints errors and picks exit codes.

One ``_add_<cmd>(subparsers)`` / ``_cmd_<cmd>(args)`` pair per command; command bodies import
what they need lazily so that ``orch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, NoReturn, Optional

from orch import __version__, exitcodes
from orch.errors import OrchError, UsageError

__all__ = ["main"]

EXIT_OK = exitcodes.OK
EXIT_INTERNAL = exitcodes.INTERNAL
EXIT_INVALID = exitcodes.INVALID

_Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments, as the contract wants; keep its one-line message."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"orch: error: {message}\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _path(text: str) -> str:
    # The OS refuses such a path with ValueError, deep inside whatever opens it first.
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character: {text!r}")
    return text


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        type=_path,
        metavar="DIR",
        help="orch home holding runs/ (default: $ORCH_HOME, else .orch in the current directory)",
    )


def _home(args: argparse.Namespace) -> str:
    home = args.home or os.environ.get("ORCH_HOME") or ".orch"
    return os.path.abspath(str(home))


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="validate a plan, then execute its DAG",
        description="Validate PLAN, then run its tasks as a DAG. Prints 'run_id: RUN_ID' first. "
        "Exit 0 all tasks SUCCESS, 2 invalid plan or arguments, 3 a task FAILED or SKIPPED, "
        "4 canceled.",
    )
    p.add_argument("plan", type=_path, metavar="PLAN", help="path to the YAML plan")
    p.add_argument(
        "--max-parallel",
        type=_positive_int,
        default=4,
        metavar="N",
        help="run at most N tasks at once (default 4)",
    )
    _add_home(p)
    p.add_argument(
        "--workdir",
        type=_path,
        metavar="DIR",
        help="directory that relative cwd, artifacts_dir and commands resolve against "
        "(default: the current directory)",
    )
    p.add_argument(
        "--fail-fast",
        action="store_true",
        help="after the first FAILED task start nothing new; running tasks finish",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the execution order as waves; run nothing, create no run",
    )
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from orch.plan import describe_plan, describe_task, load_plan

    plan, raw = load_plan(args.plan)
    if args.dry_run:
        from orch.graph import waves

        # Each wave, then the effective settings of its tasks that have any (as validate).
        settings = {t.id: describe_task(t) for t in plan.tasks}
        lines: List[str] = []
        for number, wave in enumerate(waves(plan), 1):
            lines.append(f"wave {number}: {' '.join(wave)}")
            lines.extend(f"  {tid}: {settings[tid]}" for tid in wave if settings[tid])
        if describe_plan(plan):
            lines.append(f"plan: {describe_plan(plan)}")
        lines.append(f"plan OK: {len(plan.tasks)} tasks, dry run: nothing executed")
        sys.stdout.write("\n".join(lines) + "\n")
        return EXIT_OK
    from orch.engine import start_run

    workdir = os.path.abspath(args.workdir or os.getcwd())
    if not os.path.isdir(workdir):
        raise UsageError(f"--workdir is not a directory: {workdir}")
    return start_run(
        plan=plan,
        plan_bytes=raw,
        plan_path=args.plan,
        home=_home(args),
        workdir=workdir,
        max_parallel=args.max_parallel,
        fail_fast=args.fail_fast,
    )


def _add_resume(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "resume",
        help="continue a run from its stored plan snapshot",
        description="Continue RUN_ID from the plan snapshot in its run directory. SUCCESS tasks "
        "never run again; every other task runs again (attempts keep counting). Exit codes as "
        "for 'orch run'.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument(
        "--failed-only",
        action="store_true",
        help="re-run only FAILED tasks and the tasks SKIPPED because of them",
    )
    p.add_argument(
        "--max-parallel",
        type=_positive_int,
        metavar="N",
        help="run at most N tasks at once (default: the run's own setting)",
    )
    _add_home(p)
    p.set_defaults(handler=_cmd_resume)


def _cmd_resume(args: argparse.Namespace) -> int:
    from orch.engine import resume_run

    return resume_run(
        home=_home(args),
        run_id=args.run_id,
        failed_only=args.failed_only,
        max_parallel=args.max_parallel,
    )


def _add_cancel(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cancel",
        help="ask a live run to stop",
        description="Ask the live run RUN_ID to stop: running tasks get SIGTERM (SIGKILL after "
        "the grace period), nothing new starts, the run exits 4. An interrupted run (its orch "
        "process is gone) has its leftover processes ended and is marked CANCELED.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    _add_home(p)
    p.set_defaults(handler=_cmd_cancel)


def _cmd_cancel(args: argparse.Namespace) -> int:
    from orch.engine import cancel_run

    print(cancel_run(home=_home(args), run_id=args.run_id), flush=True)
    return EXIT_OK


def _add_status(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status",
        help="show a run and its tasks",
        description="Show RUN_ID's status and a table of its tasks. A run whose orch process is "
        "gone while its state still says RUNNING shows as INTERRUPTED.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--json", action="store_true", help="print the run state as JSON")
    _add_home(p)
    p.set_defaults(handler=_cmd_status)


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from orch import report, store

    run_dir = store.run_dir_for(_home(args), args.run_id)
    state = store.read_state(run_dir)
    alive = store.owner_alive(run_dir)
    if args.json:
        state["effective_status"] = report.effective_status(state, alive)
        sys.stdout.write(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(report.render_status(state, alive, color=_color(sys.stdout)))
    return EXIT_OK


def _add_logs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "logs",
        help="print task logs",
        description="Print the logs of RUN_ID's tasks (all tasks unless --task).",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--task", metavar="ID", help="only this task")
    p.add_argument(
        "--tail", type=_non_negative_int, metavar="N", help="only the last N lines of each log"
    )
    p.add_argument(
        "--stream",
        choices=("stdout", "stderr", "both"),
        default="both",
        help="which log to print (default both)",
    )
    p.add_argument(
        "--attempt", type=_positive_int, metavar="N", help="only attempt N (1 is the first)"
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep printing new output until the task ends (needs --task)",
    )
    _add_home(p)
    p.set_defaults(handler=_cmd_logs)


def _cmd_logs(args: argparse.Namespace) -> int:
    from orch import logs, store

    run_dir = store.run_dir_for(_home(args), args.run_id)
    state = store.read_state(run_dir)
    out = sys.stdout.buffer
    if args.follow:
        if not args.task:
            raise UsageError("--follow needs --task ID")
        if args.attempt is not None:
            raise UsageError("--follow cannot be combined with --attempt")

        def read() -> Dict[str, Any]:
            current = store.read_state(run_dir)
            current["owner_alive"] = store.owner_alive(run_dir)
            return dict(current)

        logs.follow(out, read, args.task, args.stream, tail=args.tail)
        return EXIT_OK
    task_ids = [args.task] if args.task else list(state["tasks"])
    logs.write_logs(out, dict(state), task_ids, args.stream, args.tail, args.attempt)
    out.flush()
    return EXIT_OK


def _add_list(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "list",
        help="list runs, newest first",
        description="List the runs in the home, newest first: id, status, start, duration, goal "
        "and task counts.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_home(p)
    p.set_defaults(handler=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    import json

    from orch import report, store

    entries, skipped = store.list_runs(_home(args))
    for line in skipped:
        sys.stderr.write(line + "\n")
    if args.json:
        rows = [report.list_entry_json(state, alive) for state, alive in entries]
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(report.render_list(entries))
    return EXIT_OK


def _add_validate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "validate",
        help="check a plan and report every problem",
        description="Check PLAN and print every problem at once (FILE:LINE:COL: task 'ID': "
        "message), or 'plan OK: N tasks'. Exit 0 valid, 2 invalid.",
    )
    p.add_argument("plan", type=_path, metavar="PLAN")
    p.set_defaults(handler=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    from orch.plan import describe_plan, describe_task, load_plan

    plan, _ = load_plan(args.plan)
    # The first line stays exactly `plan OK: N tasks` (scripts read it); then the plan-level
    # settings and, per task, its effective settings after defaults, for those that have any.
    lines = [f"plan OK: {len(plan.tasks)} tasks"]
    if describe_plan(plan):
        lines.append(f"plan: {describe_plan(plan)}")
    for task in plan.tasks:
        settings = describe_task(task)
        if settings:
            lines.append(f"  {task.id}: {settings}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _add_graph(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "graph",
        help="print the DAG as Mermaid or DOT",
        description="Print the DAG of a plan file, or of a run (whose nodes then carry their "
        "status), as Mermaid or Graphviz DOT text.",
    )
    p.add_argument("target", type=_path, metavar="PLAN|RUN_ID")
    p.add_argument(
        "--format", choices=("mermaid", "dot"), default="mermaid", help="default mermaid"
    )
    _add_home(p)
    p.set_defaults(handler=_cmd_graph)


def _cmd_graph(args: argparse.Namespace) -> int:
    from orch import graph, store
    from orch.plan import load_plan, parse_plan

    statuses = None
    if os.path.exists(args.target) or not store.looks_like_run_id(args.target):
        plan, _ = load_plan(args.target)
    else:
        run_dir = store.run_dir_for(_home(args), args.target)
        state = store.read_state(run_dir)
        plan = parse_plan(store.read_plan_text(run_dir), os.path.join(run_dir, "plan.yaml"))
        statuses = {tid: t["status"] for tid, t in state["tasks"].items()}
    render = graph.to_mermaid if args.format == "mermaid" else graph.to_dot
    sys.stdout.write(render(plan, statuses))
    return EXIT_OK


def _color(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return "NO_COLOR" not in os.environ and bool(isatty and isatty())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orch",
        description="Run CLI agents, build, test and lint tools as a DAG described in a YAML "
        "plan: parallelism, timeouts, retries, logs, status, resume, cancel and artifacts.",
        epilog="Exit codes: 0 success, 1 internal error, 2 invalid plan or arguments or unknown "
        "run, 3 a task FAILED or SKIPPED, 4 run canceled.",
    )
    parser.add_argument("--version", action="version", version=f"orch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (
        _add_run,
        _add_resume,
        _add_cancel,
        _add_status,
        _add_logs,
        _add_list,
        _add_validate,
        _add_graph,
    ):
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Optional[_Handler] = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        return handler(args)
    except OrchError as err:
        sys.stderr.write(f"{err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `orch logs ... | head` closing the pipe early is not an error.
        _silence_stdout()
        return EXIT_OK
    except OSError as err:
        # The environment refused (read-only or full disk, no permission, too many open
        # files): not a bug, and a traceback would not help the user fix it.
        where = f"{err.filename}: " if err.filename else ""
        sys.stderr.write(f"orch: {where}{err.strerror or err}\n")
        return EXIT_INVALID
    except Exception as err:
        sys.stderr.write(f"orch: internal error: {type(err).__name__}: {err}\n")
        if os.environ.get("ORCH_DEBUG"):
            import traceback

            traceback.print_exc(file=sys.stderr)
        else:
            sys.stderr.write("orch: set ORCH_DEBUG=1 to see the traceback\n")
        return EXIT_INTERNAL


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
