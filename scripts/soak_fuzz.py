#!/usr/bin/env python3
"""Long fuzzing soak of the plan parser: the properties of tests/test_fuzz.py, for as long as asked.

    python3 scripts/soak_fuzz.py --seconds 600 --seed 1
    python3 scripts/soak_fuzz.py --seconds 60 --mode json --seed 7 --out /tmp/soak

Each input goes through ``orch.yamlsub.loads`` and ``orch.plan.parse_plan`` (``bytes`` mode:
``orch.plan.load_plan`` on a file). The properties checked on every input:

- only ``YamlError`` / ``PlanError`` may be raised, with a line and column inside the text;
- no single call runs longer than ``--hang-sec`` (default 5 s): a hang is a failure;
- ``json`` mode: JSON text parses to exactly the JSON value, or is refused (never a guess);
- ``cmd`` mode: a ``cmd`` string splits exactly as ``shlex.split`` does, or both refuse.

Inputs are random mutations of the valid plans in tests/data/plans/valid and examples/,
token soups, arbitrary bytes, random JSON documents and shell-like command strings. A failing
input is saved under ``--out`` (with the error) and counted; the summary groups failures by
exception type and source line. Exit 0 when nothing failed, 1 otherwise. Standard library only;
the same ``--seed`` gives the same inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orch.errors import PlanError, YamlError  # noqa: E402
from orch.plan import load_plan, parse_plan  # noqa: E402
from orch.yamlsub import loads  # noqa: E402

MODES = ("mutate", "tokens", "bytes", "json", "cmd")
TOKENS = [
    *" \t\n\r:-#[]{},\"'\\|>?&*!%@`~.0123456789aezAEZ_",
    *["\r\n", "\ufeff", "\x00", "\x7f", "\x85", "\u2028", "\ud800", "é", "日"],
    *[": ", "- ", " #", "---", "...", "\\u00e9", "\\x", "''", '"', "~", "null", "true"],
    *["tasks:", "  - id: x\n    cmd: [a]\n", "depends_on: [", "timeout_sec: ", "env: {"],
    *["1e400", ".nan", "0x1F", "|", ">-", "|+2", "? ", "&a", "*a", "!!str"],
]


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def _seeds() -> List[str]:
    paths = sorted((REPO / "tests" / "data" / "plans" / "valid").glob("*.yaml"))
    paths += sorted((REPO / "examples").glob("*.yaml"))
    return [p.read_bytes().decode("utf-8") for p in paths]


def mutate(rnd: random.Random, text: str) -> str:
    for _ in range(rnd.randint(1, 8)):
        at = rnd.randint(0, len(text))
        op = rnd.random()
        if op < 0.3:
            text = text[:at] + text[at + rnd.randint(1, 20) :]
        elif op < 0.65:
            text = text[:at] + rnd.choice(TOKENS) * rnd.choice((1, 1, 1, 2, 3, 50)) + text[at:]
        elif op < 0.85:
            span = text[at : at + rnd.randint(1, 200)]
            where = rnd.randint(0, len(text))
            text = text[:where] + span * rnd.choice((1, 1, 2, 30)) + text[where:]
        else:
            text = text[:at] + rnd.choice(TOKENS) + text[at + 1 :]
    return text


def json_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.random() < 0.5
    if kind == 2:
        return rnd.randint(-(10**20), 10**20)
    if kind == 3:
        return rnd.choice([0.0, -0.0, 1.5, 1e300, -2.5e-300, rnd.uniform(-1e6, 1e6)])
    if kind in (4, 5):
        return "".join(rnd.choice(TOKENS) for _ in range(rnd.randint(0, 8)))
    if kind in (6, 7):
        return [json_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    keys = ("".join(rnd.choice(TOKENS) for _ in range(rnd.randint(0, 4))) for _ in range(4))
    return {key: json_value(rnd, depth + 1) for key in list(keys)[: rnd.randint(0, 4)]}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------------------ checks


def check_text(text: str) -> None:
    try:
        loads(text)
    except YamlError as err:
        lines = text.count("\n") + text.count("\r") + 1
        if not (1 <= err.line <= lines and err.col >= 1):
            raise AssertionError(f"position {err.line}:{err.col} outside the text") from None
    try:
        parse_plan(text, "soak.yaml")
    except PlanError as err:
        if not err.problems or len(str(err).split("\n")) != len(err.problems):
            raise AssertionError("a PlanError must render one line per problem") from None


def check_bytes(raw: bytes, path: str) -> None:
    with open(path, "wb") as f:
        f.write(raw)
    try:
        _, got = load_plan(path)
    except PlanError:
        return
    if got != raw:
        raise AssertionError("load_plan must return the plan's exact bytes")


def check_json(value: Any) -> None:
    text = json.dumps({"v": value}, ensure_ascii=False, indent=random.choice([None, 2]))
    try:
        got = loads(text)
    except YamlError:
        return
    if not same(got, {"v": value}):
        raise AssertionError(f"JSON parsed to a different value: {got!r}")


def check_cmd(cmd: str) -> None:
    try:
        expected: Optional[List[str]] = shlex.split(cmd)
    except ValueError:
        expected = None
    text = f"tasks:\n  - id: a\n    cmd: {json.dumps(cmd)}\n"
    try:
        got: Optional[Tuple[str, ...]] = parse_plan(text, "cmd.yaml").tasks[0].cmd
    except PlanError:
        got = None
    if expected is None or not expected or not expected[0]:
        if got is not None:
            raise AssertionError(f"shlex refuses {cmd!r} but orch split it into {got!r}")
    elif got != tuple(expected):
        raise AssertionError(f"split {got!r}, shlex says {expected!r}")


# ------------------------------------------------------------------------------- driver


def make_input(mode: str, rnd: random.Random, seeds: List[str], max_size: int) -> Any:
    if mode == "mutate":
        return mutate(rnd, rnd.choice(seeds))[:max_size]
    if mode == "tokens":
        return "".join(rnd.choice(TOKENS) for _ in range(rnd.randint(0, 120)))
    if mode == "bytes":
        if rnd.random() < 0.5:
            return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 300)))
        return mutate(rnd, rnd.choice(seeds)).encode("utf-8", "surrogatepass")[:max_size]
    if mode == "json":
        return json_value(rnd)
    return "".join(rnd.choice(" \t\n'\"\\ab$#") for _ in range(rnd.randint(0, 40)))


def run_one(mode: str, case: Any, scratch: str) -> None:
    checks: Dict[str, Callable[[], None]] = {
        "mutate": lambda: check_text(case),
        "tokens": lambda: check_text(case),
        "bytes": lambda: check_bytes(case, scratch),
        "json": lambda: check_json(case),
        "cmd": lambda: check_cmd(case),
    }
    checks[mode]()


def _where(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    frame = frames[-1] if frames else None
    return f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"


def _save(out: Path, number: int, mode: str, case: Any, err: BaseException) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{mode}-{number:06d}"
    if isinstance(case, bytes):
        stem.with_suffix(".bin").write_bytes(case)
    elif isinstance(case, str):
        stem.with_suffix(".yaml").write_bytes(case.encode("utf-8", "surrogatepass"))
    else:
        stem.with_suffix(".json").write_text(json.dumps(case, ensure_ascii=False))
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    stem.with_suffix(".txt").write_text(text)


def soak(args: argparse.Namespace) -> int:
    rnd = random.Random(args.seed)
    random.seed(args.seed)
    seeds = _seeds()
    modes = MODES if args.mode == "all" else (args.mode,)
    counts = {mode: 0 for mode in modes}
    failures: Dict[Tuple[str, str, str], int] = {}
    slowest = (0.0, "", 0)
    signal.signal(signal.SIGALRM, _alarm)
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="orch-soak-") as tmp:
        scratch = os.path.join(tmp, "plan.yaml")
        while time.monotonic() < deadline:
            mode = modes[sum(counts.values()) % len(modes)]
            case = make_input(mode, rnd, seeds, args.max_size)
            counts[mode] += 1
            began = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.hang_sec)
            try:
                run_one(mode, case, scratch)
            except Exception as err:
                signal.setitimer(signal.ITIMER_REAL, 0)
                key = (mode, type(err).__name__, _where(err))
                failures[key] = failures.get(key, 0) + 1
                if failures[key] <= args.keep:
                    if args.out is None:
                        args.out = tempfile.mkdtemp(prefix="orch-soak-failures-")
                    _save(Path(args.out), sum(counts.values()), mode, case, err)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            spent = time.perf_counter() - began
            if spent > slowest[0]:
                size = len(case) if isinstance(case, (str, bytes)) else len(json.dumps(case))
                slowest = (spent, mode, size)
    total = sum(counts.values())
    print(f"soak: {total} inputs in {args.seconds:g}s (seed {args.seed})")
    for mode, count in counts.items():
        print(f"  {mode:7s} {count}")
    print(f"  slowest single input: {slowest[0] * 1000:.1f} ms ({slowest[1]}, {slowest[2]} chars)")
    if not failures:
        print("no failures")
        return 0
    print(f"FAILURES (inputs saved under {args.out}):")
    for (mode, name, where), count in sorted(failures.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {mode:7s} {name} at {where}")
    return 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument("--max-size", type=int, default=20_000, help="cap on mutated inputs")
    parser.add_argument("--hang-sec", type=float, default=5.0, help="per-input time limit (5)")
    parser.add_argument("--out", help="where failing inputs go (default: a new temp directory)")
    parser.add_argument("--keep", type=int, default=5, help="inputs kept per distinct failure")
    return soak(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
