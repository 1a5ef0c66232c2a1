#!/usr/bin/env python3
"""A stand-in for a CLI agent, for orch's examples and tests (standard library only).

    python3 tools/fake_agent.py inspect|build|test [--sleep SEC] [--fail-rate P]
        [--fail-always] [--produce PATH]... [--spam-bytes N] [--read-context]
        [--message TEXT]

It says what it does on stdout, reports errors on stderr and exits 1 on a (simulated)
failure. ``--fail-rate`` draws from FAKE_AGENT_SEED when it is set, so a failure pattern
can be reproduced; the seed is mixed with ORCH_TASK_ID and ORCH_ATTEMPT so that a retry
of the same task is a new draw.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any, List, Optional

SUBCOMMANDS = {
    "inspect": "inspecting the workspace",
    "build": "building",
    "test": "running the tests",
}
_CHUNK = 64 * 1024


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fake_agent.py",
        description="Pretend to be a CLI agent: sleep, produce files, print, fail on demand.",
    )
    p.add_argument("subcommand", choices=sorted(SUBCOMMANDS), help="what to pretend to do")
    p.add_argument("--sleep", type=_non_negative, default=0.0, metavar="SEC", help="work time")
    p.add_argument(
        "--fail-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fail with probability P (0..1); seeded by FAKE_AGENT_SEED",
    )
    p.add_argument("--fail-always", action="store_true", help="always fail (exit 1)")
    p.add_argument(
        "--produce",
        action="append",
        default=[],
        metavar="PATH",
        help="write a small file at PATH, creating parent directories (repeatable)",
    )
    p.add_argument(
        "--spam-bytes",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="write N bytes to stdout, in chunks",
    )
    p.add_argument(
        "--read-context",
        action="store_true",
        help="print a summary of the JSON file named by ORCH_CONTEXT",
    )
    p.add_argument("--message", default=None, metavar="TEXT", help="a line to print")
    return p


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _probability(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _say(text: str) -> None:
    print(f"[fake-agent] {text}", flush=True)


def _rng() -> random.Random:
    seed = os.environ.get("FAKE_AGENT_SEED")
    if seed is None:
        return random.Random()
    key = f"{seed}/{os.environ.get('ORCH_TASK_ID', '')}/{os.environ.get('ORCH_ATTEMPT', '')}"
    return random.Random(key)


def _produce(path: str, subcommand: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    task = os.environ.get("ORCH_TASK_ID", "-")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"produced by fake_agent {subcommand} (task {task})\n")
    _say(f"wrote {path}")


def _spam(total: int) -> None:
    # Chunks from one reusable buffer: the agent's memory stays flat whatever N is.
    line = b"spam spam spam spam spam spam spam spam spam spam spam spam spam spam spam\n"
    chunk = (line * (_CHUNK // len(line) + 1))[:_CHUNK]
    out = sys.stdout.buffer
    left = total
    while left > _CHUNK:
        out.write(chunk)
        left -= _CHUNK
    # Exactly N bytes, the last one a newline so the next message starts on its own line.
    out.write(chunk[: left - 1] + b"\n")
    out.flush()


def _context_summary(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        data: Any = json.load(f)
    if not isinstance(data, dict):
        return [f"context {path}: a JSON {type(data).__name__}, not an object"]
    lines = [
        f"context: run {data.get('run_id', '?')}, task {data.get('task_id', '?')}, "
        f"attempt {data.get('attempt', '?')}"
    ]
    deps = data.get("dependencies")
    if not isinstance(deps, dict) or not deps:
        return [*lines, "context: no dependencies"]
    for dep_id, info in deps.items():
        lines.extend(_dependency_lines(str(dep_id), info))
    return lines


def _dependency_lines(dep_id: str, info: Any) -> List[str]:
    if not isinstance(info, dict):
        return [f"dependency {dep_id}: {info!r}"]
    paths = info.get("artifact_paths")
    paths = [str(p) for p in paths] if isinstance(paths, list) else []
    exit_code = info.get("exit_code")
    lines = [
        f"dependency {dep_id}: {info.get('status', '?')}, exit {exit_code}, "
        f"{len(paths)} artifact(s)"
    ]
    lines.extend(f"  artifact {p}" for p in paths)
    return lines


def _read_context() -> Optional[str]:
    """Print the context summary; an error message if it cannot be read."""
    path = os.environ.get("ORCH_CONTEXT")
    if not path:
        _say("no ORCH_CONTEXT in the environment")
        return None
    try:
        for line in _context_summary(path):
            _say(line)
    except OSError as exc:
        return f"cannot read ORCH_CONTEXT {path}: {exc.strerror or exc}"
    except ValueError as exc:
        return f"ORCH_CONTEXT {path} is not valid JSON: {exc}"
    return None


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    task = os.environ.get("ORCH_TASK_ID")
    where = f" (task {task}, attempt {os.environ.get('ORCH_ATTEMPT', '?')})" if task else ""
    _say(f"{args.subcommand}: {SUBCOMMANDS[args.subcommand]}{where}")
    if args.message is not None:
        _say(args.message)
    if args.read_context:
        error = _read_context()
        if error:
            print(f"fake_agent: error: {error}", file=sys.stderr, flush=True)
            return 1
    if args.sleep:
        _say(f"working for {args.sleep:g}s")
        time.sleep(args.sleep)
    try:
        for path in args.produce:
            _produce(path, args.subcommand)
    except OSError as exc:
        print(f"fake_agent: error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.spam_bytes:
        _spam(args.spam_bytes)
        _say(f"wrote {args.spam_bytes} bytes of output")
    return _finish(args.subcommand, args.fail_always, args.fail_rate)


def _finish(subcommand: str, fail_always: bool, fail_rate: float) -> int:
    if fail_always:
        print(f"fake_agent: error: {subcommand} failed (--fail-always)", file=sys.stderr)
        return 1
    if fail_rate > 0:
        draw = _rng().random()
        if draw < fail_rate:
            print(
                f"fake_agent: error: {subcommand} failed "
                f"(simulated: draw {draw:.3f} < fail rate {fail_rate:g})",
                file=sys.stderr,
            )
            return 1
    _say(f"{subcommand}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
