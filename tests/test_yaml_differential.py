"""Differential tests: orch.yamlsub against ruamel.yaml (dev-only) with a core-schema resolver.

ruamel is loaded as ``YAML(typ="safe", pure=True)`` with its resolver replaced by the YAML 1.2
core schema (so ``1_000``, ``0b101``, dates and ``<<`` are plain strings, as in the subset) and
int/float constructors that follow the core-schema spellings exactly.

Divergences of the oracle, normalised here:
- what ruamel accepts but the subset rejects (NEL and U+2028 as line breaks, ``"x"#c``, a BOM
  mid-document, anchors, tags, merge keys, ``{a, b}``, ...) is what the generator marks as a
  reject-list feature: such a document must be rejected by us, with a matching message;
- ruamel decides whether a ':' after ``key: `` inside ``{}`` starts the value ``:1`` by looking at
  the last token still queued, which its parser may already have taken (``{a: :1}`` parses,
  ``k: {a: :1}`` fails): the oracle's scanner remembers the last token it produced instead;
- ruamel reads a lone ':' before a flow indicator as text (``[:]`` -> ``[':']``, ``{a: :}``,
  ``[::]`` -> ``['::']``), which YAML 1.2 does not (':' starts a plain scalar only when an
  ns-plain-safe character follows; inside [] and {} that excludes ``,[]{}``): such documents
  must be rejected by us; and it reads ``{:a}`` as ``{None: 'a'}`` (YAML 1.2: ``{':a': None}``),
  so a key inside ``{}`` may not start with ':' at all;
- ruamel rejects a block scalar whose first leading blank line holds some spaces and a later
  line more ("more indented follow up line than first in a block scalar"), which YAML 1.2 and
  PyYAML accept: for that error only, PyYAML's pure SafeLoader with the same core schema and a
  duplicate-key check is the oracle.

Generated documents: ``ORCH_FUZZ_SEED`` (default 20240601) and ``ORCH_FUZZ_COUNT`` (default
3000) choose them; document i comes from ``random.Random(f"{seed}:{i}")``, so one failing
document can be regenerated alone. A failure prints the seed, the index and the text.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from orch.errors import YamlError
from orch.yamlsub import loads
from tests import yamlgen
from tests.test_yamlsub import canonical, decode_expected

ruamel_yaml = pytest.importorskip("ruamel.yaml")
pyyaml = pytest.importorskip("yaml")

from ruamel.yaml.constructor import SafeConstructor  # noqa: E402
from ruamel.yaml.resolver import VersionedResolver  # noqa: E402
from ruamel.yaml.scanner import Scanner  # noqa: E402
from ruamel.yaml.tokens import ValueToken  # noqa: E402

SEED = int(os.environ.get("ORCH_FUZZ_SEED", "20240601"))
COUNT = int(os.environ.get("ORCH_FUZZ_COUNT", "3000"))
DATA = Path(__file__).parent / "data" / "yaml"
RUAMEL_BLANK_LINE_BUG = "more indented follow up line than first in a block scalar"

# ------------------------------------------------------------------------------ the oracles

_CORE: Dict[Any, List[Tuple[str, Any]]] = {}


def _core(tag: str, regex: str, first: str) -> None:
    for ch in first:
        _CORE.setdefault(ch, []).append(("tag:yaml.org,2002:" + tag, re.compile(regex)))
    if first == "":
        _CORE.setdefault("", []).append(("tag:yaml.org,2002:" + tag, re.compile(regex)))


_core("null", r"(?:~|null|Null|NULL|)\Z", "~nN")
_core("null", r"\Z", "")
_core("bool", r"(?:true|True|TRUE|false|False|FALSE)\Z", "tTfF")
_core("int", r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z", "-+0123456789")
_core(
    "float",
    r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z",
    "-+0123456789.",
)


def _int(text: str) -> int:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)


def _float(text: str) -> float:
    low = text.lower()
    if low.endswith("inf"):
        return -math.inf if text[0] == "-" else math.inf
    if low.endswith("nan"):
        return math.nan
    return float(text)


class _CoreResolver(VersionedResolver):  # type: ignore[misc]
    @property
    def versioned_resolver(self) -> Any:
        return _CORE


class _CoreConstructor(SafeConstructor):  # type: ignore[misc]
    pass


_CoreConstructor.add_constructor("tag:yaml.org,2002:int", lambda c, n: _int(c.construct_scalar(n)))
_CoreConstructor.add_constructor(
    "tag:yaml.org,2002:float", lambda c, n: _float(c.construct_scalar(n))
)


_RUAMEL_END_SPACE_TAB = " \n\0\t\r\x85\u2028\u2029"  # ruamel.yaml.scanner._THE_END_SPACE_TAB


class _QueueFreeScanner(Scanner):  # type: ignore[misc]
    """ruamel's scanner, but a flow-mapping value may start with ':' wherever it stands.

    ruamel reads ':1' after ``key: `` inside ``{}`` as a value only when the ValueToken before
    it is still in its token queue; once the parser has taken it, ':' becomes an indicator and
    ``k: {a: :1}`` fails while ``{a: :1}`` parses. Remember the last token produced instead.
    """

    _last_fetched: Any = None

    def fetch_more_tokens(self) -> Any:
        result = super().fetch_more_tokens()
        if self.tokens:
            self._last_fetched = self.tokens[-1]
        return result

    def check_value(self) -> Any:
        if self.tokens or not self.flow_level or self.flow_context[-1] != "{":
            return super().check_value()
        after_value = isinstance(self._last_fetched, ValueToken)
        return not after_value or self.reader.peek(1) in _RUAMEL_END_SPACE_TAB


def ruamel_load(text: str) -> Any:
    yaml = ruamel_yaml.YAML(typ="safe", pure=True)
    yaml.Scanner = _QueueFreeScanner
    yaml.Resolver = _CoreResolver
    yaml.Constructor = _CoreConstructor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a reused anchor in a document we reject anyway
        return yaml.load(text)


class _PyCoreLoader(pyyaml.SafeLoader):  # type: ignore[misc,name-defined]
    pass


_PyCoreLoader.yaml_implicit_resolvers = {k: list(v) for k, v in _CORE.items()}


def _py_mapping(loader: Any, node: Any) -> Dict[Any, Any]:
    loader.flatten_mapping(node)
    out: Dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:  # PyYAML would keep the last value silently
            raise ValueError(f"duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_PyCoreLoader.add_constructor("tag:yaml.org,2002:int", lambda c, n: _int(c.construct_scalar(n)))
_PyCoreLoader.add_constructor("tag:yaml.org,2002:float", lambda c, n: _float(c.construct_scalar(n)))
_PyCoreLoader.add_constructor("tag:yaml.org,2002:map", _py_mapping)


def oracle(text: str) -> Tuple[str, Any]:
    """('ok', value) or ('err', message) from ruamel, or PyYAML for ruamel's blank-line bug."""
    try:
        return "ok", ruamel_load(text)
    except Exception as err:  # any ruamel error means: ruamel rejects
        if RUAMEL_BLANK_LINE_BUG not in str(err):
            return "err", f"{type(err).__name__}: {err}"
    try:
        return "ok", pyyaml.load(text, Loader=_PyCoreLoader)
    except Exception as err:
        return "err", f"PyYAML {type(err).__name__}: {err}"


def ours(text: str) -> Tuple[str, Any]:
    try:
        return "ok", loads(text)
    except YamlError as err:
        return "err", str(err)


# ------------------------------------------------------------------------------ tests


def test_oracle_uses_the_core_schema() -> None:
    doc = "[1_000, 0b101, 2024-01-01, 012, 0o17, 0x1F, 1e3, .NaN, yes, ~, 'x']"
    value = ruamel_load(doc)
    assert canonical(value) == canonical(
        ["1_000", "0b101", "2024-01-01", 12, 15, 31, 1000.0, math.nan, "yes", None, "x"]
    )
    assert ruamel_load("<<: {a: 1}") == {"<<": {"a": 1}}  # no merge
    assert ruamel_load("k: {a: :1}\n") == {"k": {"a": ":1"}}  # the token-queue quirk, fixed
    with pytest.raises(Exception, match="expected the node content"):
        plain_ruamel = ruamel_yaml.YAML(typ="safe", pure=True)
        plain_ruamel.load("k: {a: :1}\n")  # ... which unpatched ruamel has
    assert oracle("a: |\n \n  x\n") == ("ok", {"a": "\nx\n"})  # ruamel's bug, PyYAML answers
    with pytest.raises(Exception, match="duplicate"):
        pyyaml.load("a: 1\na: 2\n", Loader=_PyCoreLoader)


@pytest.mark.parametrize("path", sorted((DATA / "valid").glob("*.yaml")), ids=lambda p: p.stem)
def test_valid_corpus_matches_ruamel(path: Path) -> None:
    text = path.read_bytes().decode("utf-8")
    expected = decode_expected(json.loads(path.with_suffix(".json").read_text("utf-8")))
    status, value = oracle(text)
    assert status == "ok", value
    assert canonical(loads(text)) == canonical(value) == canonical(expected)


def _judge(doc: yamlgen.Doc) -> Tuple[str, str]:
    """(outcome, detail): outcome is 'same', 'both-reject', 'rejected-as-flagged' or an error."""
    mine, theirs = ours(doc.text), oracle(doc.text)
    if doc.flags:
        if mine[0] == "ok":
            return "ACCEPTED A REJECT-LIST FEATURE", f"flags {sorted(doc.flags)}"
        if theirs[0] == "ok" and not any(re.search(rx, mine[1]) for rx in doc.flags.values()):
            return "REJECTED FOR AN UNEXPECTED REASON", f"{mine[1]} (flags {sorted(doc.flags)})"
        return "rejected-as-flagged", ""
    if mine[0] == "ok" and theirs[0] == "ok":
        if canonical(mine[1]) == canonical(theirs[1]):
            return "same", ""
        return "VALUE MISMATCH", f"ours {mine[1]!r}\n  oracle {theirs[1]!r}"
    if mine[0] == "ok":
        return "ACCEPTED WHAT YAML REJECTS", str(theirs[1])
    if theirs[0] == "ok":
        return "REJECTED VALID SUBSET DOCUMENT", f"{mine[1]}\n  oracle {theirs[1]!r}"
    return "both-reject", ""  # a generator slip both loaders refuse: harmless, but counted


def _generated(seed: int, count: int) -> List[yamlgen.Doc]:
    return [yamlgen.generate(random.Random(f"{seed}:{i}")) for i in range(count)]


def test_generated_documents_agree_with_ruamel() -> None:
    counts: Dict[str, int] = {}
    failures: List[str] = []
    for i, doc in enumerate(_generated(SEED, COUNT)):
        outcome, detail = _judge(doc)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome.isupper() and len(failures) < 10:
            failures.append(f"#{i} {outcome}: {detail}\n  text {doc.text!r}")
    header = f"ORCH_FUZZ_SEED={SEED} ORCH_FUZZ_COUNT={COUNT}: {counts}"
    assert not failures, header + "\n" + "\n".join(failures)
    # A parser that rejects everything cannot pass: most documents must be accepted and equal.
    assert counts.get("same", 0) >= COUNT // 2, header
    assert counts.get("rejected-as-flagged", 0) >= COUNT // 10, header
    assert counts.get("both-reject", 0) <= COUNT // 100, header


def test_generator_is_reproducible_and_varied() -> None:
    first = _generated(7, 50)
    assert first == _generated(7, 50)
    texts = "".join(doc.text for doc in _generated(8, 400))
    for feature in ("- ", ": [", "{", "|", ">", "'", '"', "\\", "#", "\r\n", "---", "\ufeff"):
        assert feature in texts, feature


@pytest.mark.parametrize(
    "text",
    [
        "a: b\x85c\n",  # NEL: a line break for ruamel, a forbidden character here
        'a: "x"#c\n',
        "a: 1\n\ufeffb: 2\n",
        "a: &x 1\nb: *x\n",
        "<<: {a: 1}\n",
        "{a, b}\n",
        "[a: b]\n",
        "cmd: x\n  --verbose\n",
    ],
)
def test_ruamel_accepts_what_the_subset_rejects(text: str) -> None:
    assert oracle(text)[0] == "ok"
    assert ours(text)[0] == "err"


def _mutations(rnd: random.Random, text: str) -> str:
    alphabet = [*list(" \n:#-?[]{},'\"|>&*!%@`\\\t.019az~"), "\u3000", ": ", "- ", "\r\n"]
    for _ in range(rnd.randint(1, 3)):
        p = rnd.randint(0, len(text))
        roll = rnd.random()
        if roll < 0.4:
            text = text[:p] + rnd.choice(alphabet) + text[p:]
        elif roll < 0.7:
            text = text[:p] + text[p + 1 :]
        else:
            q = rnd.randint(0, len(text))
            text = text[:p] + text[q : q + rnd.randint(1, 6)] + text[p:]
    return text


def test_mutated_corpus_documents_we_accept_agree_with_ruamel() -> None:
    # Random edits of valid documents: whatever we still accept must be what YAML reads.
    rnd = random.Random(SEED)
    corpus = [
        p.read_bytes().decode("utf-8")
        for p in sorted((DATA / "valid").glob("*.yaml"))
        if not p.stem.startswith("22_")
    ]
    failures: List[str] = []
    accepted = 0
    for i in range(COUNT):
        text = _mutations(rnd, rnd.choice(corpus))
        mine = ours(text)
        if mine[0] != "ok":
            continue
        accepted += 1
        theirs = oracle(text)
        if theirs[0] != "ok" or canonical(theirs[1]) != canonical(mine[1]):
            failures.append(f"#{i}: ours {mine[1]!r}, oracle {theirs[1]!r}\n  text {text!r}")
    assert not failures[:10], f"ORCH_FUZZ_SEED={SEED}\n" + "\n".join(failures[:10])
    assert accepted >= COUNT // 5


# ------------------------------------------------------------------------------ ':' first in flow


@pytest.mark.parametrize(
    "text",
    [
        "cmd: [echo, ::1]\n",
        "{a: :1}\n",
        "[:1, ::1, :x:y, :a :b]\n",
        "[:#, :x#y, :-, :?, :'q']\n",
        '{a: :x :y, "b"::2, c: [:3]}\n',
        "k: [\n  ::1,  # c\n  :2\n]\n",
        "- [::1]\n- ::1\n",
        "env: {A: :1, B: '::1'}\n",  # unpatched ruamel fails here
        "{a:\n  1, b:\n\n  :2}\n",  # ... and here (found by the mutation test)
    ],
)
def test_colon_first_flow_scalars_match_ruamel(text: str) -> None:
    mine, theirs = ours(text), oracle(text)
    assert mine[0] == theirs[0] == "ok", (mine, theirs)
    assert canonical(mine[1]) == canonical(theirs[1])


@pytest.mark.parametrize(
    "text", ["[: ]\n", "{:a: b}\n", "{a: :x: y}\n", "{:x : y}\n", "[:a]x\n", "[:{]\n"]
)
def test_colon_first_flow_errors_match_ruamel(text: str) -> None:
    assert oracle(text)[0] == "err"
    assert ours(text)[0] == "err"


@pytest.mark.parametrize(
    "text", ["[:]\n", "[:,]\n", "[a, :]\n", "{a: :}\n", "[::]\n", "{a: ::}\n", "{:a}\n"]
)
def test_ruamel_reads_a_lone_colon_in_flow_as_text_which_yaml_does_not(text: str) -> None:
    assert oracle(text)[0] == "ok"
    assert ours(text)[0] == "err"
