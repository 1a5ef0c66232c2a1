"""Tests of orch.yamlsub: the corpus in tests/data/yaml, positions (Marks), limits and traps.

Corpus layout
-------------
``tests/data/yaml/valid/<name>.yaml`` is parsed and compared with ``<name>.json``;
``tests/data/yaml/invalid/<name>.yaml`` must raise a YamlError whose message equals
``<name>.txt`` (whole, without the final newline). Files are read as bytes and decoded as
UTF-8 without newline translation, so CR, CRLF, tabs and a BOM reach the parser as written.
Names start with the row of YAML_SUBSET.md they cover: ``01_`` .. ``22_`` for the Accept table,
``core_`` for the core schema, ``r01_`` .. ``r13_`` for the Reject list.

Expected-value encoding (what plain JSON cannot say)
----------------------------------------------------
- Mappings are compared in document order (not just as equal dicts).
- int versus float: a JSON number without fraction or exponent is an ``int``, one with a ``.``
  or an exponent is a ``float`` (Python's json keeps the difference), and the types must match:
  ``1`` is not ``1.0`` and ``true`` is not ``1``.
- ``{"!float": "inf"}``, ``{"!float": "-inf"}``, ``{"!float": "nan"}``: the special floats.
- ``{"!map": [[key, value], ...]}``: a mapping with at least one non-string key; keys and values
  are encoded the same way (e.g. ``[[1, "a"], [null, "b"]]`` for ``{1: 'a', None: 'b'}``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from orch.errors import OrchError, YamlError
from orch.yamlsub import MAX_DEPTH, Marks, load_with_marks, loads

DATA = Path(__file__).parent / "data" / "yaml"


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _cases(kind: str) -> List[Path]:
    return sorted((DATA / kind).glob("*.yaml"))


def decode_expected(obj: Any) -> Any:
    """Turn the JSON encoding described in the module docstring into the Python value."""
    if isinstance(obj, list):
        return [decode_expected(x) for x in obj]
    if isinstance(obj, dict):
        if list(obj) == ["!float"]:
            return float(obj["!float"])
        if list(obj) == ["!map"]:
            return {decode_expected(k): decode_expected(v) for k, v in obj["!map"]}
        return {k: decode_expected(v) for k, v in obj.items()}
    return obj


def canonical(value: Any) -> Any:
    """A comparable form that keeps types, key order and NaN (which equals nothing)."""
    if isinstance(value, dict):
        return ("map", [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("seq", [canonical(x) for x in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


# ---------------------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("path", _cases("valid"), ids=lambda p: p.stem)
def test_valid_corpus(path: Path) -> None:
    expected = decode_expected(json.loads(_read(path.with_suffix(".json"))))
    assert canonical(loads(_read(path))) == canonical(expected)


@pytest.mark.parametrize("path", _cases("invalid"), ids=lambda p: p.stem)
def test_invalid_corpus(path: Path) -> None:
    expected = _read(path.with_suffix(".txt")).rstrip("\n")
    with pytest.raises(YamlError) as info:
        loads(_read(path))
    assert str(info.value) == expected
    assert expected.startswith(f"line {info.value.line}, column {info.value.col}: ")
    assert isinstance(info.value, OrchError)


def test_corpus_covers_every_row_of_the_spec() -> None:
    valid = {p.stem.split("_")[0] for p in _cases("valid")}
    invalid = {p.stem.split("_")[0] for p in _cases("invalid")}
    assert {f"{i:02d}" for i in range(1, 23)} | {"core"} <= valid
    assert {f"r{i:02d}" for i in range(1, 14)} <= invalid
    assert len(_cases("valid")) + len(_cases("invalid")) >= 150


# ---------------------------------------------------------------------------------------- marks

PLAN = """\
goal: demo   # c
tasks:
  - id: build
    cmd: [make, "all"]
    env: {"K": v}
    timeout_sec:
  - id: 'test'
    depends_on:
    - build
    script: |
      echo hi
"""


def _marks() -> Marks:
    return load_with_marks(PLAN)[1]


def test_marks_values_and_keys() -> None:
    marks = _marks()
    assert marks.value(()) == (1, 1)
    assert marks.value(("goal",)) == (1, 7)
    assert marks.key(("goal",)) == (1, 1)
    assert marks.value(("tasks",)) == (3, 3)
    assert marks.value(("tasks", 0)) == (3, 5)
    assert marks.key(("tasks", 0, "cmd")) == (4, 5)
    assert marks.value(("tasks", 0, "cmd")) == (4, 10)
    assert marks.value(("tasks", 0, "cmd", 1)) == (4, 17)
    assert marks.key(("tasks", 0, "env", "K")) == (5, 11)
    assert marks.value(("tasks", 0, "env", "K")) == (5, 16)
    assert marks.value(("tasks", 1, "id")) == (7, 9)
    assert marks.value(("tasks", 1, "depends_on", 0)) == (9, 7)
    assert marks.value(("tasks", 1, "script")) == (10, 13)


def test_marks_of_null_values_point_after_the_indicator() -> None:
    marks = _marks()
    assert marks.key(("tasks", 0, "timeout_sec")) == (6, 5)
    assert marks.value(("tasks", 0, "timeout_sec")) == (6, 17)
    assert load_with_marks("- \n")[1].value((0,)) == (1, 2)


def test_marks_fall_back_to_the_nearest_ancestor() -> None:
    marks = _marks()
    assert marks.value(("tasks", 0, "retries")) == (3, 5)
    assert marks.key(("tasks", 0, "retries")) == (3, 5)
    assert marks.value(("tasks", 7, "id")) == (3, 3)
    assert marks.value(("tasks", 7)) == (3, 3)
    assert marks.value(("goal", "x")) == (1, 7)
    assert marks.value(("tasks", "0")) == (3, 3)  # a string is no sequence index
    assert marks.value(("tasks", True)) == (3, 3)  # nor is a bool
    assert marks.value(("tasks", 0, ["unhashable"])) == (3, 5)
    assert marks.key(("tasks", 1)) == (7, 5)  # a sequence item has no key: its value


def test_marks_of_an_empty_document_and_of_non_string_keys() -> None:
    value, marks = load_with_marks("# nothing\n")
    assert value is None
    assert marks.value(("a", 0)) == (1, 1)
    marks = load_with_marks("x:\n  2: a\n  false: b\n")[1]
    assert marks.key(("x", 2)) == (2, 3)
    assert marks.key(("x", False)) == (3, 3)
    assert marks.key(("x", 0)) == (3, 3)  # looked up like a dict: 0 == False


def test_marks_follow_multiline_flow_and_crlf() -> None:
    text = "a: [\r\n  1,\r\n  {b: \"x\"}\r\n]\r\nc: 'y'\r\n"
    value, marks = load_with_marks(text)
    assert value == {"a": [1, {"b": "x"}], "c": "y"}
    assert marks.value(("a", 1, "b")) == (3, 7)
    assert marks.key(("c",)) == (5, 1)


# ---------------------------------------------------------------------------------------- limits


def _deep_block(depth: int) -> str:
    return "".join(" " * i + f"k{i}:\n" for i in range(depth - 1)) + " " * (depth - 1) + "v: 1\n"


@pytest.mark.parametrize(
    "text",
    [
        _deep_block(MAX_DEPTH),
        "[" * MAX_DEPTH + "x" + "]" * MAX_DEPTH,
        "{a: " * MAX_DEPTH + "}" * MAX_DEPTH,
        "- " * MAX_DEPTH + "x",
    ],
    ids=["block", "flow-seq", "flow-map", "compact-seq"],
)
def test_depth_100_parses(text: str) -> None:
    value = loads(text)
    depth = 0
    while isinstance(value, (dict, list)):
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
        depth += 1
    assert depth == MAX_DEPTH


@pytest.mark.parametrize(
    "text",
    [
        _deep_block(MAX_DEPTH + 1),
        _deep_block(1000),
        "[" * 1000 + "]" * 1000,
        "[" * 100000,
        "{a: " * 1000 + "}" * 1000,
        "- " * 1000 + "x",
        "a:\n" + "- " * 60 + "[" * 50 + "]" * 50,
    ],
)
def test_too_deep_is_a_clear_error_not_recursion(text: str) -> None:
    with pytest.raises(YamlError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        loads(text)


def test_depth_limit_holds_with_little_stack_left() -> None:
    # The parser needs a few frames per level: 100 levels must fit even when the caller
    # has already used a good part of the default recursion limit.
    def nest(n: int) -> Any:
        return loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) if n == 0 else nest(n - 1)

    assert nest(sys.getrecursionlimit() - 600) is not None


def test_pathological_inputs_stay_linear() -> None:
    # Inputs that make backtracking regexes explode; generous bound, 2 shared cores.
    n = 50_000  # quadratic behaviour would take minutes at this size
    texts = [
        "[" * 99 + "a, " * n,
        "{" + "a: b, " * n,
        "a: " + "x " * n + ":",
        "a: " + "x:" * n + " #",
        "[" + "a " * n + ":",
        'a: "' + "\\\\" * n + "\\",
        "a: '" + "''" * n,
        "a: " + "1" * 4000 + "e" * n,
        "a: |\n" + "  x\n" * n + " y\n",
        "- " + "#" * n,
    ]
    for text in texts:
        start = time.perf_counter()
        try:
            loads(text)
        except YamlError:
            pass
        assert time.perf_counter() - start < 5.0, text[:40]


# ---------------------------------------------------------------------------------------- traps


@pytest.mark.parametrize("ch", ["\x1c", "\x1d", "\x1e", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"])
def test_splitlines_breaks_are_rejected_not_line_ends(ch: str) -> None:
    with pytest.raises(YamlError) as info:
        loads(f"a: 1\nb: x{ch}y\n")
    assert (info.value.line, info.value.col) == (2, 5)
    assert f"U+{ord(ch):04X}" in info.value.message


def test_lone_surrogate_in_text_is_rejected() -> None:
    with pytest.raises(YamlError, match=r"line 2, column 4: .*U\+D800"):
        loads("a: 1\nb: \ud800\n")


def test_unicode_spaces_are_text() -> None:
    assert loads("a: \u3000x\u3000\nb: '\xa0'\n") == {"a": "\u3000x\u3000", "b": "\xa0"}


def test_int_and_float_never_see_unvalidated_text() -> None:
    doc = loads("[1_000, ' 7', １２, ١٢, inf, nan, Infinity, ²]")
    assert doc == ["1_000", " 7", "１２", "١٢", "inf", "nan", "Infinity", "²"]


def test_bool_and_int_keys_are_one_key() -> None:
    for text in ("1: a\ntrue: b\n", "true: a\n1: b\n", "0: a\nfalse: b\n", "{1.0: a, 1: b}"):
        with pytest.raises(YamlError, match="duplicate key"):
            loads(text)
    assert loads("1: a\n'true': b\n") == {1: "a", "true": "b"}


def test_types_are_exact() -> None:
    doc = loads("[true, 1, 1.0, 0x1, null, '1']")
    assert [type(x) for x in doc] == [bool, int, float, int, type(None), str]


def test_two_nan_keys_are_two_keys() -> None:
    # Duplicates are compared with Python equality, and NaN equals nothing.
    assert len(loads(".nan: a\n.NaN: b\n")) == 2


def test_error_attributes() -> None:
    with pytest.raises(YamlError) as info:
        loads("a:\n  b: 1\n  b: 2\n")
    err = info.value
    assert (err.line, err.col) == (3, 3)
    assert err.message == "duplicate key 'b' (first at line 2, column 3)"
    assert str(err) == "line 3, column 3: " + err.message


def test_results_are_fresh_objects() -> None:
    text = "a: [1]\nb: {c: d}\n"
    first = loads(text)
    first["a"].append(2)
    assert loads(text) == {"a": [1], "b": {"c": "d"}}


def _spec_examples() -> Iterator[Tuple[str, Any]]:
    # The example column of the Accept table, verbatim.
    yield "a: 1\r\n", {"a": 1}
    yield "a: 1  # c", {"a": 1}
    yield "a:\n  b: 1", {"a": {"b": 1}}
    yield "k:\n- a", {"k": ["a"]}
    yield "- id: a\n  cmd: x", [{"id": "a", "cmd": "x"}]
    yield "[a, {b: [1]}, ]", ["a", {"b": [1]}]
    yield 'cmd: [\n  "x",  # c\n]', {"cmd": ["x"]}
    yield '{"a":1}', {"a": 1}
    yield "url: http://h:80/#x", {"url": "http://h:80/#x"}
    yield "'it''s'", "it's"
    yield '"a\\tb\\u3042"', "a\tb\u3042"
    yield '"a\n  b\n\n  c"', "a b\nc"
    yield "a: |-\n  x", {"a": "x"}
    yield "a: |\n  # h\n  x  \n", {"a": "# h\nx  \n"}
    yield "1: a", {1: "a"}
    yield "my key: b", {"my key": "b"}
    yield "- a", ["a"]
    yield "a: 末尾\u3000", {"a": "末尾\u3000"}
    yield "# nothing", None


@pytest.mark.parametrize("text,expected", list(_spec_examples()))
def test_spec_examples(text: str, expected: Any) -> None:
    assert canonical(loads(text)) == canonical(expected)


def test_folded_example_without_final_newline_has_none() -> None:
    # The spec's row 18 shows 'x y\nz\n' for a file that ends with a newline; without one,
    # clip chomping has no line break to keep (YAML 1.2, as ruamel and libyaml do).
    assert loads("a: >\n  x\n  y\n\n  z\n") == {"a": "x y\nz\n"}
    assert loads("a: >\n  x\n  y\n\n  z") == {"a": "x y\nz"}


# ---------------------------------------------------------------------------------------- ':' first

# YAML 1.2 ns-plain-first: a ':' may start a plain scalar when an ns-plain-safe character follows;
# inside [] and {} that excludes the flow indicators ',[]{}' (and a space or the line end).


@pytest.mark.parametrize(
    "text,expected",
    [
        ("cmd: [echo, ::1]", {"cmd": ["echo", "::1"]}),
        ("{a: :1}", {"a": ":1"}),
        ("[:1]", [":1"]),
        ("[::1]", ["::1"]),
        ("[ :x , :y ]", [":x", ":y"]),
        ("[:a :b, :a:b]", [":a :b", ":a:b"]),
        ("[:#, :x#y, :-, :?, :'q', :\"]", [":#", ":x#y", ":-", ":?", ":'q'", ':"']),
        ("{a: :x :y, b: :2}", {"a": ":x :y", "b": ":2"}),
        ('{"a"::1, "b": :2}', {"a": ":1", "b": ":2"}),
        ("{a: [:1, {b: ::x}]}", {"a": [":1", {"b": "::x"}]}),
        ("k: [\n  ::1,  # c\n  :2\n]\n", {"k": ["::1", ":2"]}),
        ("- [::1]\n- :x\n", [["::1"], ":x"]),
        ("[:\u3000, :\xa0x]", [":\u3000", ":\xa0x"]),
        ("[:1, :0x1F, :null]", [":1", ":0x1F", ":null"]),  # never resolved: always a str
    ],
)
def test_plain_scalar_may_start_with_colon_inside_flow(text: str, expected: Any) -> None:
    assert canonical(loads(text)) == canonical(expected)


def test_marks_of_a_colon_first_flow_scalar() -> None:
    value, marks = load_with_marks("cmd: [echo, ::1]\nenv: {a: :1}\n")
    assert value == {"cmd": ["echo", "::1"], "env": {"a": ":1"}}
    assert marks.value(("cmd", 1)) == (1, 13)
    assert marks.value(("env", "a")) == (2, 10)


@pytest.mark.parametrize(
    "text,line,col,message",
    [
        # ':' then a space, a flow indicator or the line end starts no scalar.
        ("[: ]", 1, 2, "a mapping key is missing before ':'"),
        ("[:]", 1, 2, "a mapping key is missing before ':'"),
        ("[:,]", 1, 2, "a mapping key is missing before ':'"),
        ("[a, :]", 1, 5, "a mapping key is missing before ':'"),
        ("[:\n]", 1, 2, "a mapping key is missing before ':'"),
        ("{a: :}", 1, 5, "a value inside {} cannot be a lone ':'"),
        ("{a: : b}", 1, 5, "a value inside {} cannot be a lone ':'"),
        ('{"a"::}', 1, 6, "a value inside {} cannot be a lone ':'"),
        # ':' then ':' then a closer: the scalar is ':' and a ':' indicator follows it.
        ("[::]", 1, 3, r"a 'key: value' pair inside \[\.\.\.\]"),
        ("[:a: b]", 1, 4, r"a 'key: value' pair inside \[\.\.\.\]"),
        ("{a: ::}", 1, 6, "unexpected ':' after a flow mapping value"),
        ("{a: :x: y}", 1, 7, "unexpected ':' after a flow mapping value"),
        # Keys inside {} may not start with ':': YAML 1.2 reads ':a' as the key, ruamel reads
        # an empty key (or fails), PyYAML fails.
        ("{:a: b}", 1, 2, "a key inside {} cannot start with ':'"),
        ("{:a}", 1, 2, "a key inside {} cannot start with ':'"),
        ("{a: 1, :b: 2}", 1, 8, "a key inside {} cannot start with ':'"),
        ("{: a}", 1, 2, "a mapping key is missing before ':'"),
        # Unchanged: '?x' stays refused inside flow, multi-line plain scalars stay refused.
        ("[?x]", 1, 2, "cannot start with '\\?'"),
        ("[:x\n :y]", 2, 2, "a plain scalar cannot span several lines"),
        ("[:a]x", 1, 5, "unexpected text after the closing bracket"),
    ],
)
def test_colon_first_flow_scalars_that_stay_invalid(
    text: str, line: int, col: int, message: str
) -> None:
    with pytest.raises(YamlError, match=message) as info:
        loads(text)
    assert (info.value.line, info.value.col) == (line, col)
