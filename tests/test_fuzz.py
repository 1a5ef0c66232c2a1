"""Fuzzing the YAML-subset parser and the plan loader: bad text is an error, never a crash.

Whatever the input, ``orch.yamlsub.loads`` returns a value or raises ``YamlError``, and
``orch.plan.parse_plan`` / ``load_plan`` return a ``Plan`` or raise ``PlanError`` whose problems
carry a line and column when the text gives one: never another exception type, never a hang.
Hypothesis runs derandomized with a bounded number of examples, so the suite stays reproducible
and takes a few seconds; ``scripts/soak_fuzz.py`` runs the same properties for as long as asked.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.errors import PlanError, YamlError
from orch.plan import load_plan, parse_plan
from orch.yamlsub import MAX_DEPTH, loads

REPO = Path(__file__).resolve().parent.parent
SEED_FILES = sorted((REPO / "tests" / "data" / "plans" / "valid").glob("*.yaml")) + sorted(
    (REPO / "examples").glob("*.yaml")
)
SEEDS = [p.read_bytes().decode("utf-8") for p in SEED_FILES]
# Characters that steer the parser: indicators, quotes, escapes, blanks, line breaks, a BOM,
# characters YAML forbids, a lone surrogate and some non-ASCII text.
TOKENS = [
    *" \t\n\r:-#[]{},\"'\\|>?&*!%@`~.0123456789aezAEZ_",
    *["\r\n", "\ufeff", "\x00", "\x7f", "\x85", "\u2028", "\ud800", "é", "日"],
    *[": ", "- ", " #", "---", "...", "\\u00e9", "\\x", "''", '"', "~", "null", "true"],
    *["tasks:", "  - id: x\n    cmd: [a]\n", "depends_on: [", "timeout_sec: ", "env: {"],
    *["1e400", ".nan", "0x1F"],
]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HANG_LIMIT_SEC = 10.0


class _Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(limit: float = HANG_LIMIT_SEC) -> Iterator[None]:
    """Turn a call that runs longer than ``limit`` into a test failure instead of a stuck suite."""

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"still running after {limit}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_loads(text: str) -> None:
    """``loads`` gives a value or a YamlError with a plausible position; nothing else."""
    with no_hang():
        try:
            loads(text)
        except YamlError as err:
            lines = max(1, text.count("\n") + text.count("\r") + 1)
            assert 1 <= err.line <= lines, (err, text[:200])
            assert err.col >= 1, (err, text[:200])
            assert f"line {err.line}, column {err.col}: " in str(err)


def check_parse_plan(text: str) -> None:
    """``parse_plan`` gives a Plan or a PlanError rendered one problem per line."""
    with no_hang():
        try:
            plan = parse_plan(text, "fuzz.yaml")
        except PlanError as err:
            assert err.problems
            rendered = str(err).split("\n")
            assert len(rendered) == len(err.problems)
            for problem, line in zip(err.problems, rendered):
                assert line.startswith("fuzz.yaml"), line
                assert "\n" not in problem.message
                if problem.line is not None:
                    assert line.startswith(f"fuzz.yaml:{problem.line}:"), line
            return
    assert plan.tasks
    ids = [t.id.lower() for t in plan.tasks]
    assert len(set(ids)) == len(ids)
    known = set(t.id for t in plan.tasks)
    for task in plan.tasks:
        assert task.cmd and task.cmd[0]
        assert set(task.depends_on) <= known


@st.composite
def mutated_plans(draw: Callable[..., Any]) -> str:
    """A valid plan with a few random edits: insertions, deletions, duplicated spans."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "replace"]))
        if op == "insert":
            token = draw(st.sampled_from(TOKENS))
            text = text[:at] + token * draw(st.sampled_from([1, 1, 2, 3, 40])) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif op == "duplicate":
            end = min(len(text), at + draw(st.integers(1, 80)))
            where = draw(st.integers(0, len(text)))
            text = text[:where] + text[at:end] + text[where:]
        else:
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at + 1 :]
    return text


yamlish_text = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


@FUZZ
@given(mutated_plans())
def test_mutated_valid_plans_give_a_plan_or_a_located_error(text: str) -> None:
    check_loads(text)
    check_parse_plan(text)


@FUZZ
@given(yamlish_text)
def test_token_soup_gives_a_value_or_a_located_error(text: str) -> None:
    check_loads(text)
    check_parse_plan(text)


@settings(FUZZ, max_examples=100)
@given(st.text(max_size=300))
def test_arbitrary_text_gives_a_value_or_a_located_error(text: str) -> None:
    check_loads(text)
    check_parse_plan(text)


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "plan.yaml"


@settings(FUZZ, max_examples=150)
@given(
    raw=st.one_of(
        st.binary(max_size=400), mutated_plans().map(lambda s: s.encode("utf-8", "surrogatepass"))
    )
)
def test_arbitrary_bytes_through_load_plan(plan_file: Path, raw: bytes) -> None:
    plan_file.write_bytes(raw)
    with no_hang():
        try:
            _, got = load_plan(str(plan_file))
        except PlanError as err:
            assert all(p.file == str(plan_file) for p in err.problems)
            return
    assert got == raw


# ------------------------------------------------------------------- JSON is YAML 1.2

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and list(a) == list(b)
            and all(_same(a[k], b[k]) for k in a)  # order and values
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


@FUZZ
@given(json_values, st.sampled_from([None, 2]))
def test_json_text_parses_to_the_same_value_or_is_refused(value: Any, indent: Any) -> None:
    # JSON is (nearly all) YAML 1.2: the parser may refuse what it does not support, but a
    # value it returns must be exactly the JSON value: never a guessed one.
    text = json.dumps({"v": value}, indent=indent, ensure_ascii=False)
    with no_hang():
        try:
            got = loads(text)
        except YamlError:
            return
    assert _same(got, {"v": value}), text


@settings(FUZZ, max_examples=150)
@given(st.text(alphabet=" \t\n'\"\\ab$#", max_size=30))
def test_cmd_strings_split_exactly_like_shlex(cmd: str) -> None:
    text = f"tasks:\n  - id: a\n    cmd: {json.dumps(cmd)}\n"
    try:
        expected: Any = shlex.split(cmd)
    except ValueError:
        expected = None
    with no_hang():
        try:
            got: Any = parse_plan(text, "p.yaml").tasks[0].cmd
        except PlanError:
            got = None
    if expected is None or not expected or not expected[0]:
        assert got is None
    else:
        assert got == tuple(expected)


# --------------------------------------------------------------------- known findings


@pytest.mark.parametrize("text", ["[::]", "[::a]", "{::", "- [::, x]", "a: [b, ::c]"])
def test_plain_scalar_made_of_colons_in_flow_is_an_error_not_a_crash(text: str) -> None:
    # Found by fuzzing: an IndexError escaped from the parser.
    check_loads(text)
    check_parse_plan(f"tasks:\n  - id: a\n    cmd: {text}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"": a}', {"": "a"}), ('{"": a, b: c}', {"": "a", "b": "c"}), ('[{"": 1}]', [{"": 1}])],
)
def test_empty_quoted_key_in_a_one_line_flow_mapping(text: str, expected: Any) -> None:
    # Found by fuzzing: a TypeError escaped from the one-line flow mapping fast path.
    assert loads(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: |\n  \nb: c\n", {"a": "", "b": "c"}),
        ("- |\n  \n- x\n", ["", "x"]),
        ("a: |+\n  \nb: c\n", {"a": "\n", "b": "c"}),
        ("a: >-\n   \n\nb: c\n", {"a": "", "b": "c"}),
    ],
)
def test_block_scalar_of_blank_lines_followed_by_more_is_empty(text: str, expected: Any) -> None:
    # Found by differential fuzzing against ruamel.yaml (and libyaml): the indentation of a
    # block scalar without text lines was taken from the next, unrelated line.
    assert loads(text) == expected


# ------------------------------------------------------------------ size and adversaries

ADVERSARIAL_KB = 128


def _adversarial(n: int) -> List[str]:
    """Inputs built to make a backtracking regex or a quadratic loop explode; ~n bytes each."""
    half = n // 2
    return [
        " " * n,
        "a:" + " " * n + "x",
        '"' * n,
        "'" * n,
        "#" * n,
        ":" * n,
        ": " * half,
        "[" * n,
        "{" * n,
        "- " * half,
        '"' + "\\" * n,
        '"' + '\\"' * half,
        "a: x" + " " * n + "y:",
        "a" + " a" * half + " :",
        "[" + "a:" * half,
        "{" + "a " * half,
        "[" + "a, " * (n // 3) + "]",
        "{" + "k: v, " * (n // 6) + "}",
        "a: '" + "x\n " * (n // 3) + "'",
        'a: "' + "x\n" * half + '"',
        "a: b" + ":b" * half + ": c",
        "k: " + "#a" * half,
        "\n".join(["a: b"] + [" " * (i % 50) + "c" for i in range(n // 30)]),
        "#\n" * half,
        "\r" * n,
        "a: |\n" + " " * n + "\n",
        "a: >\n" + "  x\n  \n" * (n // 8),
        "".join(f"k{i}: v\n" for i in range(n // 8)),
        "tasks:\n  - id: a\n    cmd: " + json.dumps("x" * n) + "\n",
        "tasks:\n  - id: a\n    cmd: " + json.dumps("'" + "x" * n) + "\n",
        "tasks:\n  - id: a\n    cmd: " + json.dumps('"' + "x " * half) + "\n",
        "tasks:\n  - id: " + "a" * n + "\n    cmd: x\n",
        "tasks:\n  - id: a\n    cmd: x\n    " + "k" * n + ": 1\n",
        "tasks:\n  - id: a\n    cmd: x\n    depends_on: [" + "q" * n + "]\n",
    ]


@pytest.mark.parametrize("index", range(len(_adversarial(16))))
def test_adversarial_input_is_handled_in_linear_time(index: int) -> None:
    text = _adversarial(ADVERSARIAL_KB * 1024)[index]
    began = time.perf_counter()
    check_loads(text)
    check_parse_plan(text)
    # Linear work on 128 KiB takes well under a second; a quadratic one takes minutes.
    assert time.perf_counter() - began < 5.0, text[:60]


def _big_plan(min_bytes: int) -> str:
    parts = ['goal: "a big plan"\ntasks:\n']
    size, i = 0, 0
    while size < min_bytes:
        deps = ", ".join(f"task_{j}" for j in range(max(0, i - 3), i))
        part = (
            f"  - id: task_{i}\n"
            f'    cmd: ["python3", "-c", "print({i})"]\n'
            f"    depends_on: [{deps}]\n"
            f'    env: {{MODE: "m{i}"}}\n'
            "    timeout_sec: 30\n"
        )
        parts.append(part)
        size += len(part)
        i += 1
    return "".join(parts)


def test_a_1_mb_plan_parses_quickly() -> None:
    text = _big_plan(1 << 20)
    began = time.perf_counter()
    plan = parse_plan(text, "big.yaml")
    elapsed = time.perf_counter() - began
    assert len(plan.tasks) > 6000
    assert plan.tasks[-1].depends_on[-1] == plan.tasks[-2].id
    # About 0.7 s on the reference machine; generous bound for 2 shared cores.
    assert elapsed < 6.0, f"{elapsed:.2f}s"


@pytest.mark.parametrize(
    "cmd",
    ["x" * (1 << 20), "'" + "x" * (1 << 20), '"' + "x " * (1 << 19) + '"'],
    ids=["one-word", "unclosed-quote", "quoted"],
)
def test_a_1_mb_cmd_string_splits_in_linear_time(cmd: str) -> None:
    # shlex.split grows a long word one character at a time (quadratic): 1 MiB took ~30 s.
    text = f"tasks:\n  - id: a\n    cmd: {json.dumps(cmd)}\n"
    began = time.perf_counter()
    check_parse_plan(text)
    assert time.perf_counter() - began < 5.0


@pytest.mark.parametrize(
    "text",
    [
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "tasks:\n  - id: a\n    cmd: x\n    env: " + "{a: " * 5000 + "}" * 5000 + "\n",
        "tasks:\n" + "".join(" " * (2 * i) + "- \n" for i in range(1, 3000)),
    ],
    ids=["flow", "deep-env", "deep-block"],
)
def test_nesting_is_limited_with_a_clear_located_error(text: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(text, "deep.yaml")
    [problem] = info.value.problems
    assert f"nesting deeper than {MAX_DEPTH} levels" in problem.message
    assert problem.line is not None and problem.col is not None
