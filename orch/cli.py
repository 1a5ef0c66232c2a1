"""Command line: argparse front end, the only place that prints errors and picks exit codes.

One ``_add_<cmd>(subparsers)`` / ``_cmd_<cmd>(args)`` pair per command; command bodies import
what they need lazily so that ``orch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

from orch import __version__, exitcodes
from orch.errors import OrchError, UsageError

__all__ = ["main"]

EXIT_OK = exitcodes.OK
EXIT_INTERNAL = exitcodes.INTERNAL
EXIT_INVALID = exitcodes.INVALID

_Handler = Callable[[argparse.Namespace], int]


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps prose as argparse does, but keeps a paragraph with indented lines (examples,
    output formats) exactly as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for block in text.split("\n\n"):
            if any(line[:1].isspace() for line in block.splitlines()):
                blocks.append("\n".join(indent + line for line in block.splitlines()))
            else:
                blocks.append(super()._fill_text(block, width, indent))
        return "\n\n".join(blocks)


_NEGATIVE_NUMBER = re.compile(r"\A-\d+\Z|\A-\d*\.\d+\Z")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments, as the contract wants; keep its one-line message.

    Also: did-you-mean for a mistyped command, choice or option (an unknown option is named
    before anything else is parsed, so ``--max-paralel 2 plan.yaml`` is not reported as an
    unexpected ``plan.yaml``), and a command's options and arguments in any order
    (``parse_known_intermixed_args``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._intermixing = False

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"orch: error: {message}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Optional[Sequence[str]] = None, namespace: Optional[argparse.Namespace] = None
    ) -> Tuple[argparse.Namespace, List[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back in (Python < 3.13)
            return super().parse_known_args(args, namespace)
        words = list(sys.argv[1:] if args is None else args)
        self._refuse_unknown_options(words)
        if self._subparsers is not None:  # intermixed parsing refuses subparsers
            return super().parse_known_args(words, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(words, namespace)
        finally:
            self._intermixing = False

    def _refuse_unknown_options(self, words: Sequence[str]) -> None:
        known = self._option_string_actions
        value_next = False
        for word in words:
            if word == "--":
                return
            if value_next:
                value_next = False
                continue
            if word[:1] != "-" or word == "-" or _NEGATIVE_NUMBER.match(word):
                if self._subparsers is not None:
                    return  # the command: what follows is its parser's business
                continue
            name = word.split("=", 1)[0]
            action = known.get(name)
            if action is None:
                longer = [o for o in known if o.startswith(name)] if name[:2] == "--" else []
                if len(longer) != 1:
                    if longer:
                        continue  # ambiguous: argparse's own message lists the candidates
                    close = difflib.get_close_matches(name, [o for o in known if o[:2] == "--"], 1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    self.error(f"unrecognized option '{name}'{hint}")
                action = known[longer[0]]
            value_next = "=" not in word and action.nargs != 0

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices:
            names = [str(c) for c in choices]
            close = difflib.get_close_matches(str(value), names, 1)
            hint = f"did you mean '{close[0]}'?" if close else "choose from " + ", ".join(names)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({hint})")


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
    _add_executor(p, "(default: the plan's `executor`, else local)")
    p.set_defaults(handler=_cmd_run)


def _add_executor(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        help=f"where attempts run: local processes or Slurm batch jobs {default}",
    )


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
        executor=args.executor,
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
    p.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="TASK",
        help="also run TASK again, even if it is SUCCESS (repeatable)",
    )
    p.add_argument(
        "--downstream",
        action="store_true",
        help="with --rerun: also every task downstream of the named ones",
    )
    p.add_argument(
        "--plan",
        type=_path,
        metavar="FILE",
        help="resume with an edited plan: it becomes the run's plan (the old one is kept as "
        "plan.N.yaml); changed tasks run again with their downstream, added tasks run; "
        "removing a task is an error",
    )
    _add_executor(p, "(default: the run's own)")
    _add_home(p)
    p.set_defaults(handler=_cmd_resume)


def _cmd_resume(args: argparse.Namespace) -> int:
    from orch.engine import resume_run

    return resume_run(
        home=_home(args),
        run_id=args.run_id,
        failed_only=args.failed_only,
        max_parallel=args.max_parallel,
        rerun=args.rerun,
        downstream=args.downstream,
        plan_file=args.plan,
        executor=args.executor,
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

    from orch import report, store

    run_dir = store.run_dir_for(_home(args), args.run_id)
    state = store.read_state(run_dir)
    alive = store.owner_alive(run_dir)
    if any(t.get("status") == "RUNNING" and t.get("job_id") for t in state["tasks"].values()):
        from orch import slurm

        slurm.add_job_states(state)  # each running task's job, as squeue sees it now
    if args.json:
        state["effective_status"] = report.effective_status(state, alive)
        _write_state_json(sys.stdout, state)
    else:
        sys.stdout.write(report.render_status(state, alive, color=_color(sys.stdout)))
    return EXIT_OK


def _write_state_json(out: Any, state: Any) -> None:
    """The state as JSON: run fields one per line, then one line per task, written a task at a
    time with json's C encoder (indent would mean its pure-Python one: 5x slower on a 10,000-task
    run, and a second copy of the state in memory)."""
    import json

    encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    lines = ["{"]
    lines.extend(f"  {encode(k)}: {encode(v)}," for k, v in state.items() if k != "tasks")
    out.write("\n".join(lines) + '\n  "tasks": {')
    sep = "\n"
    for task_id, task in state["tasks"].items():
        out.write(f"{sep}    {encode(task_id)}: {encode(task)}")
        sep = ",\n"
    out.write("\n  }\n}\n")


def _add_logs(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "logs",
        help="print task logs",
        description="Print the logs of RUN_ID's tasks (all tasks unless --task).\n\n"
        "One stream of one task (--task ID --stream stdout|stderr, with or without --attempt) "
        "is printed exactly as the task wrote it, nothing added, so it can be piped into "
        "another program. Anything else gets headers: before each attempt's output in a "
        "stream, and after each finished attempt a line saying how it ended (M is the number "
        "of attempts made so far):\n\n"
        "  ==> task build attempt 2/3 stdout <==\n"
        "  ==> task build attempt 2/3: exit 1 after 2.3s <==\n"
        "  ==> task deploy: no attempts (SKIPPED: dependency_not_success) <==\n\n"
        "--follow without --task follows every task until the run ends, each line prefixed "
        "'TASK_ID | '.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--task", metavar="ID", help="only this task")
    p.add_argument(
        "--tail",
        type=_non_negative_int,
        metavar="N",
        help="only the last N lines the task wrote to each log (headers are not counted)",
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
        help="keep printing new output until the task ends (with --task) or the run ends "
        "(without: every task, each line prefixed 'TASK_ID | ')",
    )
    p.add_argument(
        "--timestamps",
        action="store_true",
        help="with --follow: start each line with the time it reached the log",
    )
    _add_home(p)
    p.set_defaults(handler=_cmd_logs)


def _cmd_logs(args: argparse.Namespace) -> int:
    from orch import logs, store

    run_dir = store.run_dir_for(_home(args), args.run_id)
    if args.follow and args.attempt is not None:
        raise UsageError("--follow cannot be combined with --attempt")
    if args.timestamps and not args.follow:
        raise UsageError("--timestamps needs --follow")

    def read() -> Dict[str, Any]:
        current = dict(store.read_state(run_dir))
        current["owner_alive"] = store.owner_alive(run_dir)
        return current

    def limits() -> logs.Limits:
        return logs.plan_limits(run_dir)

    out = sys.stdout.buffer
    if args.follow:
        logs.follow(
            out,
            read,
            args.task,
            args.stream,
            tail=args.tail,
            timestamps=args.timestamps,
            limits=limits,
        )
    else:
        task_ids = [args.task] if args.task else []
        logs.write_logs(out, read(), task_ids, args.stream, args.tail, args.attempt, limits=limits)
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


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return value


def _add_clean(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "clean",
        help="delete finished runs and their worktrees (never a branch)",
        description="Delete the directories of finished runs (SUCCESS, FAILED, CANCELED) and "
        "their git worktrees ('git worktree remove --force', then 'git worktree prune'). A "
        "live or unfinished run is never touched, nor any branch; changes nobody committed "
        "in a worktree are committed to its branch first. Exit 0, or 2 when a named run was "
        "refused or a removal failed (the other runs are cleaned all the same).",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="the runs to delete")
    p.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="instead: every finished run that ended more than DAYS days ago (0: all)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be removed; remove nothing"
    )
    _add_home(p)
    p.set_defaults(handler=_cmd_clean)


def _cmd_clean(args: argparse.Namespace) -> int:
    from orch import clean

    if bool(args.run_ids) == (args.older_than is not None):
        raise UsageError("orch clean: give RUN_ID ... or --older-than DAYS (one of the two)")

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def warn(line: str) -> None:
        sys.stderr.write(line + "\n")

    ok = clean.clean_runs(
        _home(args), args.run_ids, args.older_than, dry_run=args.dry_run, out=out, warn=warn
    )
    return EXIT_OK if ok else EXIT_INVALID


def _add_completion(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for bash or zsh: commands, options, their "
        "choices, and file names where a PLAN or FILE is expected. Generated from orch's own "
        "argument parser, so it is never out of date with the installed orch.",
    )
    p.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")
    p.set_defaults(handler=_cmd_completion)


def _cmd_completion(args: argparse.Namespace) -> int:
    from orch import completion

    script = completion.bash_script if args.shell == "bash" else completion.zsh_script
    sys.stdout.write(script(build_parser()))
    return EXIT_OK


def _color(stream: object) -> bool:
    from orch._fmt import color_wanted

    # no-color.org: only a non-empty NO_COLOR turns colour off.
    return color_wanted(stream, os.environ)


# Shown under "Examples:" in each command's --help. An example whose options the command
# does not have (yet) is left out, so help never shows a command line that fails.
_EXAMPLES: Dict[str, List[str]] = {
    "": ["orch run plan.yaml", "orch status last", "orch logs last --follow"],
    "run": [
        "orch run plan.yaml",
        "orch run plan.yaml --max-parallel 8 --fail-fast",
        "orch run plan.yaml --dry-run",
        "orch run plan.yaml --executor slurm",
    ],
    "resume": [
        "orch resume last",
        "orch resume 20260101_120000_0a1b2c --failed-only",
        "orch resume last --rerun test --downstream",
        "orch resume last --plan plan.yaml",
    ],
    "cancel": ["orch cancel last"],
    "status": ["orch status last", "orch status 20260101_120000_0a1b2c --json"],
    "logs": [
        "orch logs last",
        "orch logs last --task build --stream stdout | python3 -m json.tool",
        "orch logs last --task build --attempt 2 --tail 50",
        "orch logs last --follow",
        "orch logs last --follow --task build --timestamps",
    ],
    "list": ["orch list", "orch list --json"],
    "validate": ["orch validate plan.yaml"],
    "graph": ["orch graph plan.yaml", "orch graph last --format dot | dot -Tsvg > dag.svg"],
    "clean": ["orch clean last --dry-run", "orch clean --older-than 30"],
    "completion": [
        "source <(orch completion bash)      # bash: this shell only",
        "orch completion bash > ~/.local/share/bash-completion/completions/orch",
        'orch completion zsh > "${fpath[1]}/_orch"   # zsh: then start a new shell',
    ],
}


def _add_examples(parser: argparse.ArgumentParser, name: str) -> None:
    """``name``'s examples as the epilog of its parser ("" is the top level, whose examples
    use other commands' options)."""

    def known(line: str) -> bool:
        options = [w for w in line.split() if w.startswith("--")]
        return not name or all(o in parser._option_string_actions for o in options)

    shown = [line for line in _EXAMPLES.get(name, ()) if known(line)]
    if shown:
        examples = "Examples:\n" + "\n".join(f"  {line}" for line in shown)
        parser.epilog = f"{parser.epilog}\n\n{examples}" if parser.epilog else examples


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orch",
        description="Run CLI agents, build, test and lint tools as a DAG described in a YAML "
        "plan: parallelism, timeouts, retries, logs, status, resume, cancel and artifacts.",
        epilog="Exit codes: 0 success, 1 internal error, 2 invalid plan or arguments or unknown "
        "run, 3 a task FAILED or SKIPPED, 4 run canceled. A RUN_ID may be 'last': the newest "
        "run of the home.",
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
        _add_clean,
        _add_completion,
    ):
        add(sub)
    for name, command in sub.choices.items():
        _add_examples(command, name)
    _add_examples(parser, "")
    return parser


def _command_first(argv: List[str], parser: argparse.ArgumentParser) -> List[str]:
    """``orch --home h status last`` read as ``orch status --home h last``: a command's options
    are accepted before the command too. Only a prefix made of that command's options (and
    their values) moves; anything else is left for argparse to judge."""
    commands: Dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands = dict(action.choices)
    for index, word in enumerate(argv):
        command = commands.get(word)
        if command is None:
            continue
        if index == 0 or any(w in ("-h", "--help", "--version") for w in argv[:index]):
            return argv
        value_next = False
        for lead in argv[:index]:
            if value_next:
                value_next = False
                continue
            option = command._option_string_actions.get(lead.split("=", 1)[0])
            if option is None:
                return argv
            value_next = "=" not in lead and option.nargs != 0
        if value_next:
            continue  # this word is the value of the option before it, not the command
        return [word, *argv[:index], *argv[index + 1 :]]
    return argv


def _resolve_last(args: argparse.Namespace) -> None:
    """``last`` wherever a RUN_ID goes becomes the newest run's id, before the command runs,
    so that what it prints names the real run (``run_id: ...``, ``cancel requested: ...``)."""
    from orch import store

    home = _home(args) if hasattr(args, "home") else None
    for name in ("run_id", "target"):
        if getattr(args, name, None) == store.LAST and home is not None:
            setattr(args, name, store.resolve_run_id(home, store.LAST))
    ids = getattr(args, "run_ids", None)
    if isinstance(ids, list) and home is not None:
        args.run_ids = [store.resolve_run_id(home, run_id) for run_id in ids]


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_command_first(words, parser))
    handler: Optional[_Handler] = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        _resolve_last(args)
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


if __name__ == "__main__":  # `python3 -m orch.cli ...` works like `python3 -m orch ...`
    sys.exit(main())
