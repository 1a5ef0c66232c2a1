#!/usr/bin/env python3
"""A stand-in for a CLI agent, for orch's examples and tests (standard library only).

It says what it does on stdout ("[fake-agent] ..." lines), reports errors on stderr and exits 1
on a (simulated) failure. ``--fail-rate`` draws from FAKE_AGENT_SEED when it is set, so a
failure pattern can be reproduced; the seed is mixed with ORCH_TASK_ID and ORCH_ATTEMPT so that
a retry of the same task is a new draw.

Order of events: the "<subcommand>: ..." line and --message; --read-context; --rate-limit
(which ends the run there); --sleep (with --heartbeat lines); --produce / --pretend-produce;
--spam-bytes; --stdout and --stderr lines; the outcome (--fail-always, --fail-rate,
--fail-unless-exists, --exit-code, else "<subcommand>: done"); --write-metrics; the
--json-result line, always the last line on stdout.

Modes, for plans and tests (T = tools/fake_agent.py):
  T build --sleep 2 --produce dist/app.txt    work 2 s, write a file, exit 0
  T build --hang                              write nothing at all and sleep 3600 s (an idle
                                              timeout must end it); --sleep SEC sets the time
  T build --sleep 5 --heartbeat 1             "thinking": a line every 1 s for 5 s, exit 0
                                              (an idle timeout of 2 s must not fire)
  T build --rate-limit                        print "ERROR: rate limit exceeded (429)" on stdout
                                              and exit 1 at once
  T build --rate-limit --fail-attempts 2      rate limited on attempts 1 and 2 only (by
                                              ORCH_ATTEMPT), so a retry on "output:rate.?limit"
                                              succeeds at attempt 3
  T build --pretend-produce out/r.json        say "wrote out/r.json", write nothing, exit 0
                                              (require_outputs); with --fail-attempts K the file
                                              is really written from attempt K+1 on
  T build --json-result --cost-usd 0.5        last stdout line: a `claude -p --output-format
        --input-tokens 100 --output-tokens 20 json` result object with that cost and usage
  T build --write-metrics --cost-usd 0.01     append {"cost_usd": ..., "input_tokens": ...,
                                              "output_tokens": ...} to the file $ORCH_METRICS
  T test --quiet --stdout "3 failed" --stderr "E: boom" --exit-code 75
                                              stdout is exactly "3 failed", stderr exactly
                                              "E: boom", exit 75 (--quiet drops the agent's own
                                              "[fake-agent]" lines; without it they stay)
  T test --fail-unless-exists .work/fixed     the fix loop: exit 1 until the marker exists ...
  T fix --produce .work/fixed                 ... which the fix step writes (with
        --broken-if-env FIX_BROKEN              FIX_BROKEN=1 it only pretends: the red run)
  T test --fail-always --fail-attempts 1      fail on the first attempt only

--fail-attempts K limits every simulated failure (--fail-always, --fail-rate, --rate-limit,
--exit-code, --pretend-produce) to attempts 1..K; a missing ORCH_ATTEMPT counts as attempt 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from typing import Any, List, Optional

SUBCOMMANDS = {
    "inspect": "inspecting the workspace",
    "build": "building",
    "test": "running the tests",
    "fix": "fixing the code",
}
_CHUNK = 64 * 1024
HANG_SEC = 3600.0
RATE_LIMIT_LINE = "ERROR: rate limit exceeded (429)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fake_agent.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("subcommand", choices=sorted(SUBCOMMANDS), help="what to pretend to do")
    p.add_argument("--sleep", type=_non_negative, default=None, metavar="SEC", help="work time")
    p.add_argument(
        "--heartbeat",
        type=_positive,
        default=None,
        metavar="SEC",
        help="during --sleep, print a 'thinking...' line every SEC seconds",
    )
    p.add_argument(
        "--hang",
        action="store_true",
        help=f"write nothing at all (implies --quiet) and sleep {HANG_SEC:g}s or --sleep SEC",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="drop the agent's own '[fake-agent]' lines; requested output and errors stay",
    )
    _add_failures(p)
    _add_output(p)
    _add_metrics(p)
    return p


def _add_failures(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fail-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="fail with probability P (0..1); seeded by FAKE_AGENT_SEED",
    )
    p.add_argument("--fail-always", action="store_true", help="always fail (exit 1)")
    p.add_argument(
        "--rate-limit",
        action="store_true",
        help=f"print {RATE_LIMIT_LINE!r} on stdout and exit 1 before doing any work",
    )
    p.add_argument(
        "--exit-code",
        type=_exit_code,
        default=0,
        metavar="N",
        help="exit N (0..255) when nothing else failed, with no error message of its own",
    )
    p.add_argument(
        "--fail-attempts",
        type=_positive_int,
        default=None,
        metavar="K",
        help="simulated failures happen on attempts 1..K only (ORCH_ATTEMPT; unset is 1)",
    )
    p.add_argument(
        "--fail-unless-exists",
        action="append",
        default=[],
        metavar="PATH",
        help="fail (exit 1) unless PATH exists, e.g. a marker a 'fix' step writes (repeatable)",
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--produce",
        action="append",
        default=[],
        metavar="PATH",
        help="write a small file at PATH, creating parent directories (repeatable)",
    )
    p.add_argument(
        "--pretend-produce",
        action="append",
        default=[],
        metavar="PATH",
        help="say 'wrote PATH' but write nothing (a simulated failure; repeatable)",
    )
    p.add_argument(
        "--broken-if-env",
        metavar="VAR",
        help="when the environment variable VAR is set and not empty, --produce only pretends "
        "(a fix that does not work, for the red run of a fix loop)",
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
    p.add_argument(
        "--stdout",
        action="append",
        default=[],
        metavar="TEXT",
        help="print TEXT as a line on stdout, as is, before the outcome (repeatable)",
    )
    p.add_argument(
        "--stderr",
        action="append",
        default=[],
        metavar="TEXT",
        help="print TEXT as a line on stderr, as is, before the outcome (repeatable)",
    )


def _add_metrics(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json-result",
        action="store_true",
        help="end stdout with one JSON line shaped like `claude -p --output-format json`",
    )
    p.add_argument(
        "--write-metrics",
        action="store_true",
        help="append one JSON line (cost_usd, input_tokens, output_tokens) to $ORCH_METRICS",
    )
    p.add_argument(
        "--result",
        default=None,
        metavar="TEXT",
        help="the 'result' text of --json-result (default: what the agent did)",
    )
    p.add_argument(
        "--cost-usd",
        type=_non_negative,
        default=0.0123,
        metavar="X",
        help="cost reported by --json-result and --write-metrics (default 0.0123)",
    )
    p.add_argument(
        "--input-tokens",
        type=_non_negative_int,
        default=1200,
        metavar="N",
        help="input tokens reported (default 1200)",
    )
    p.add_argument(
        "--output-tokens",
        type=_non_negative_int,
        default=345,
        metavar="N",
        help="output tokens reported (default 345)",
    )


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _exit_code(text: str) -> int:
    value = _non_negative_int(text)
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be between 0 and 255: {text!r}")
    return value


def _probability(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _say(text: str) -> None:
    print(f"[fake-agent] {text}", flush=True)


def _error(text: str) -> None:
    print(f"fake_agent: error: {text}", file=sys.stderr, flush=True)


def _rng() -> random.Random:
    seed = os.environ.get("FAKE_AGENT_SEED")
    if seed is None:
        return random.Random()
    key = f"{seed}/{os.environ.get('ORCH_TASK_ID', '')}/{os.environ.get('ORCH_ATTEMPT', '')}"
    return random.Random(key)


def _attempt() -> Optional[int]:
    """ORCH_ATTEMPT as a number (1 when unset), or None when it is not an integer."""
    text = os.environ.get("ORCH_ATTEMPT", "")
    if not text:
        return 1
    try:
        return int(text)
    except ValueError:
        return None


def _produce(path: str, subcommand: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    task = os.environ.get("ORCH_TASK_ID", "-")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"produced by fake_agent {subcommand} (task {task})\n")


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


def _sleep_until(deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(left)


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


class _Agent:
    """One run of the fake agent: ``args`` plus whether this attempt simulates failures."""

    def __init__(self, args: argparse.Namespace, failing: bool) -> None:
        self.args = args
        self.failing = failing
        self.quiet: bool = args.quiet or args.hang
        self.started = time.monotonic()

    def note(self, text: str) -> None:
        """One of the agent's own progress lines (dropped by --quiet)."""
        if not self.quiet:
            _say(text)

    def run(self) -> int:
        args = self.args
        sub = args.subcommand
        task = os.environ.get("ORCH_TASK_ID")
        where = f" (task {task}, attempt {os.environ.get('ORCH_ATTEMPT', '?')})" if task else ""
        self.note(f"{sub}: {SUBCOMMANDS[sub]}{where}")
        if args.message is not None:
            _say(args.message)
        if args.read_context:
            error = _read_context()
            if error:
                _error(error)
                return 1
        if args.rate_limit and self.failing:
            print(RATE_LIMIT_LINE, flush=True)
            return 1
        self.work()
        try:
            broken = bool(args.broken_if_env and os.environ.get(args.broken_if_env))
            for path in args.produce:
                if not broken:
                    _produce(path, sub)
                self.note(f"wrote {path}")
            for path in args.pretend_produce:
                if not self.failing:
                    _produce(path, sub)
                self.note(f"wrote {path}")
        except OSError as exc:
            _error(f"cannot write {exc.filename}: {exc.strerror}")
            return 1
        if args.spam_bytes:
            _spam(args.spam_bytes)
            self.note(f"wrote {args.spam_bytes} bytes of output")
        for text in args.stdout:
            print(text, flush=True)
        for text in args.stderr:
            print(text, file=sys.stderr, flush=True)
        code = self.outcome()
        if args.write_metrics:
            code = self.write_metrics() or code
        if args.json_result:
            print(self.json_result(code), flush=True)
        return code

    def work(self) -> None:
        """Sleep for --sleep (--hang: an hour by default), with --heartbeat lines."""
        args = self.args
        total = args.sleep if args.sleep is not None else (HANG_SEC if args.hang else 0.0)
        if not total:
            return
        self.note(f"working for {total:g}s")
        start = time.monotonic()  # deadlines from one start: the beat does not drift
        every = args.heartbeat
        i = 1
        while every is not None and i * every < total:
            _sleep_until(start + i * every)
            _say(f"thinking... {i * every:g}s")
            i += 1
        _sleep_until(start + total)

    def outcome(self) -> int:
        args = self.args
        sub = args.subcommand
        if self.failing and args.fail_always:
            _error(f"{sub} failed (--fail-always)")
            return 1
        if self.failing and args.fail_rate > 0:
            draw = _rng().random()
            if draw < args.fail_rate:
                _error(f"{sub} failed (simulated: draw {draw:.3f} < fail rate {args.fail_rate:g})")
                return 1
        for path in args.fail_unless_exists:
            if not os.path.exists(path):
                _error(f"{sub} failed: {path} does not exist")
                return 1
            self.note(f"found {path}")
        code: int = args.exit_code if self.failing else 0
        if code == 0:
            self.note(f"{sub}: done")
        return code

    def write_metrics(self) -> int:
        path = os.environ.get("ORCH_METRICS")
        if not path:
            self.note("no ORCH_METRICS in the environment")
            return 0
        args = self.args
        line = json.dumps(
            {
                "cost_usd": args.cost_usd,
                "input_tokens": args.input_tokens,
                "output_tokens": args.output_tokens,
            }
        )
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            _error(f"cannot write ORCH_METRICS {path}: {exc.strerror or exc}")
            return 1
        self.note(f"appended metrics to {path}")
        return 0

    def json_result(self, code: int) -> str:
        args = self.args
        sub = args.subcommand
        task = os.environ.get("ORCH_TASK_ID", "")
        attempt = os.environ.get("ORCH_ATTEMPT", "")
        text = args.result
        if text is None:
            text = f"{sub}: done" if code == 0 else f"{sub}: failed (exit {code})"
        result = {
            "type": "result",
            "subtype": "success" if code == 0 else "error_during_execution",
            "is_error": code != 0,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "num_turns": 1,
            "result": text,
            "session_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-agent:{task}:{attempt}")),
            "total_cost_usd": args.cost_usd,
            "usage": {"input_tokens": args.input_tokens, "output_tokens": args.output_tokens},
        }
        return json.dumps(result, ensure_ascii=False)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    failing = True
    if args.fail_attempts is not None:
        attempt = _attempt()
        if attempt is None:
            _error(f"ORCH_ATTEMPT is not an integer: {os.environ.get('ORCH_ATTEMPT')!r}")
            return 2
        failing = attempt <= args.fail_attempts
    return _Agent(args, failing).run()


if __name__ == "__main__":
    sys.exit(main())
