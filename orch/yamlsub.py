"""The YAML subset of orch plans: text -> plain values, or a ``YamlError`` naming line and column.

The subset and its semantics (YAML 1.2, core schema) are defined in YAML_SUBSET.md. A document
is either parsed exactly as YAML 1.2 would parse it, or rejected; never a guessed value.

Design: the text is split once into lines (at LF, CRLF and CR only); every rule works on a
(line index, column) cursor with compiled regexes anchored at a position. Positions are therefore
free; a node's mark (its position) is built only when asked for (``load_with_marks``), because
for a large document the marks take more memory than the data. An error message whose wording
needs an earlier node's mark makes the public entry points parse the text again with marks.
Nesting is bounded by ``MAX_DEPTH`` before Python's recursion limit could be reached.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Match, Optional, Sequence, Tuple, cast

from orch.errors import YamlError

__all__ = ["MAX_DEPTH", "Marks", "load_with_marks", "loads"]

MAX_DEPTH = 100

# A mark: (line, col, kids), 1-based. kids is None for a scalar, a list of marks for a sequence,
# and for a mapping a dict: key -> (key line, key col, mark of the value).
# A parser without marks uses None for every mark (and builds no kids).
_Mark = Tuple[int, int, Any]
_MaybeMark = Optional[_Mark]
_Node = Tuple[Any, _MaybeMark, int, str]  # value, mark, index of the line after the node, kind
_Flow = Tuple[Any, _MaybeMark, int, int]  # value, mark, line of the closer, index after closer

# Where a block node starts: at a line's indentation, after '- ' (compact), after 'key: '.
_LINE, _COMPACT, _VALUE = 0, 1, 2

_BREAK = re.compile(r"\r\n|\r|\n")
_BAD_CHAR = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]"
)
_SPACES = re.compile(" *")
_BLANKS = re.compile("[ \t]*")

# Plain scalars: words separated by spaces. A word never starts with '#' (that is a comment) and
# contains ':' (even as its first character) only when a non-space follows; in flow context the
# flow indicators end it too, and a ':' needs a character other than ',[]{}' after it
# (YAML 1.2 ns-plain-first / ns-plain-char with ns-plain-safe-in).
# Each part is unambiguous (no nested choice), so matching is linear.
_B_WORD = r"(?:[^ \t:#]|:(?=[^ \t]))[^ \t:]*(?::(?=[^ \t])[^ \t:]*)*"
_PLAIN_BLOCK = re.compile(f"(?:{_B_WORD}(?: +{_B_WORD})*)?")
_F_NOT = r" \t:,\[\]{}"
_F_SAFE = r"[^ \t,\[\]{}]"  # what may follow a ':' inside a flow plain scalar
_F_WORD = rf"(?:[^{_F_NOT}#]|:(?={_F_SAFE}))[^{_F_NOT}]*(?::(?={_F_SAFE})[^{_F_NOT}]*)*"
_PLAIN_FLOW = re.compile(f"(?:{_F_WORD}(?: +{_F_WORD})*)?")

# These patterns match at any position (possibly the empty string): .match() is never None.
_AlwaysMatch = Callable[[str, int], Match[str]]
_spaces = cast(_AlwaysMatch, _SPACES.match)
_blanks = cast(_AlwaysMatch, _BLANKS.match)
_plain_block = cast(_AlwaysMatch, _PLAIN_BLOCK.match)
_plain_flow = cast(_AlwaysMatch, _PLAIN_FLOW.match)

_FLOW_SEP = ("", " ", "\t", ",", "[", "]", "{", "}")
_BLOCK_SEP = ("", " ", "\t")

# Fast paths for the common shapes; anything they do not match goes through the full rules.
_FAST_FIRST = r"[^-?:,\[\]{}#&*!|>'\"%@` \t]"  # not an indicator, not a blank
_FAST_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*) *:(?= |\Z)")
_FAST_VALUE = re.compile(
    rf"(?:\"([^\"\\]*)\"|'([^']*)'(?!')|({_FAST_FIRST}[^ \t:]*(?::(?=[^ \t])[^ \t:]*)*"
    rf"(?: +{_B_WORD})*))(?: +#.*)? *\Z"
)
_FAST_FLOW_SCALAR = (
    rf"\"([^\"\\]*)\"|'([^']*)'(?!')|({_FAST_FIRST}[^{_F_NOT}]*(?::(?={_F_SAFE})[^{_F_NOT}]*)*"
    rf"(?: +{_F_WORD})*)"
)
_FLOW_ITEM = re.compile(rf" *(?:{_FAST_FLOW_SCALAR}) *([,\]}}]) *")
# A one-line flow sequence of plain words that start with a letter (task ids in depends_on: a
# dense plan has tens of thousands), read with one match when no marks are wanted. Such a word
# is a string unless it is one of _WORDS (true, null, ...).
_NAME = "[A-Za-z][A-Za-z0-9_.-]*"
_NAME_LIST = re.compile(rf"\[ *({_NAME}(?: *, *{_NAME})*) *\]")
_NAMES = re.compile(_NAME)
_FLOW_PAIR = re.compile(
    rf' *(?:"([^"\\]*)"|([A-Za-z_][A-Za-z0-9_-]*)) *: +(?:{_FAST_FLOW_SCALAR}) *([,\]}}]) *'
)

_DQ_SIMPLE = re.compile(r'([^"\\]*)"')
_DQ_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*')
_SQ_SIMPLE = re.compile(r"([^']*)'(?!')")
_SQ_BODY = re.compile(r"[^']*(?:''[^']*)*")
_ESCAPE = re.compile(
    r'\\(?:([0abtnvfre "/\\N_LP\t])|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))'
)
_ESCAPES = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
    "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0",
    "L": "\u2028", "P": "\u2029",
}  # fmt: skip
_dq_body = cast(_AlwaysMatch, _DQ_BODY.match)
_sq_body = cast(_AlwaysMatch, _SQ_BODY.match)
_BS_HEADER = re.compile(r"[|>]([-+]?)([0-9]?)([-+]?)")

# Core schema (plain scalars only). \Z, not $: '$' would also match before a final newline.
_INT = re.compile(r"[-+]?[0-9]+\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
_INF = float("inf")
_MAX_DIGITS = 4300  # sys.int_info.default_max_str_digits where that exists
_WORDS: Dict[str, Any] = {"~": None, "null": None, "Null": None, "NULL": None}
_WORDS.update(dict.fromkeys(("true", "True", "TRUE"), True))
_WORDS.update(dict.fromkeys(("false", "False", "FALSE"), False))
for _s in ("inf", "Inf", "INF"):
    _WORDS.update({"." + _s: _INF, "+." + _s: _INF, "-." + _s: -_INF})
_NAN_WORDS = frozenset((".nan", ".NaN", ".NAN"))

# YAML 1.2 limits an implicit key (with the spaces before its ':') to 1024 characters.
_MAX_KEY = 1024
_MSG_LONG_KEY = "a mapping key longer than 1024 characters is not allowed"
_MSG_PLAIN_LINES = "a plain scalar cannot span several lines: quote it or use | or >"
_MSG_TAB = "tabs are not allowed here (only inside quoted scalars, block scalars and comments)"


class Marks:
    """Where each node of a parsed document starts (1-based line and column).

    A path is a tuple of mapping keys and sequence indices from the root, e.g.
    ``("tasks", 0, "timeout_sec")``. A path that does not exist falls back to the nearest
    ancestor (the root is at (1, 1) for an empty document).
    """

    __slots__ = ("_root", "_text")

    def __init__(self, root: _MaybeMark, text: str = "") -> None:
        self._root = root  # None: not built yet; the first lookup parses ``text`` with marks
        self._text = text

    def value(self, path: Sequence[Any]) -> Tuple[int, int]:
        """Position of the value at ``path`` (for a null value: just after its ':' or '-')."""
        node = self._walk(path)[0]
        return node[0], node[1]

    def key(self, path: Sequence[Any]) -> Tuple[int, int]:
        """Position of the mapping key of the entry at ``path``; else as ``value``."""
        node, key_pos = self._walk(path)
        return key_pos if key_pos is not None else (node[0], node[1])

    def _walk(self, path: Sequence[Any]) -> Tuple[_Mark, Any]:
        node = self._root
        if node is None:
            node = self._root = _parse_with_marks(self._text)[1]
            self._text = ""
        key_pos = None
        for step in path:
            kids = node[2]
            if isinstance(kids, dict):
                try:
                    entry = kids.get(step)
                except TypeError:  # an unhashable step names no key
                    entry = None
                if entry is None:
                    return node, None
                key_pos, node = (entry[0], entry[1]), entry[2]
            elif isinstance(kids, list) and type(step) is int and 0 <= step < len(kids):
                key_pos, node = None, kids[step]
            else:
                return node, None
        return node, key_pos


def loads(text: str) -> Any:
    """Parse one document of the subset into dict/list/str/int/float/bool/None."""
    return _parse(text)


def load_with_marks(text: str, lazy: bool = False) -> Tuple[Any, Marks]:
    """Like ``loads``, plus the position of every node.

    ``lazy``: parse without marks now and again, with marks, on the first lookup; for callers
    that look positions up only to report an error (the same text gives the same positions).
    """
    if lazy:
        return _parse(text), Marks(None, text)
    value, mark = _parse_with_marks(text)
    return value, Marks(mark)


class _NeedMarks(Exception):
    """Raised by a parser without marks where an error message needs an earlier node's mark."""


def _parse(text: str) -> Any:
    try:
        return _Parser(text, False).document()[0]
    except _NeedMarks:
        pass  # outside the handler, so that the YamlError below has no chained context
    _parse_with_marks(text)  # stops at the same place, and raises the YamlError
    raise AssertionError("a parse without marks failed where one with marks did not")


def _parse_with_marks(text: str) -> Tuple[Any, _Mark]:
    value, mark = _Parser(text, True).document()
    assert mark is not None
    return value, mark


def _bad_char_error(text: str, offset: int) -> YamlError:
    head = _BREAK.split(text[:offset])
    cp = ord(text[offset])
    if cp == 0xFEFF:
        msg = 'a byte order mark (U+FEFF) is only allowed as the first character; write "\\uFEFF"'
    elif 0xD800 <= cp <= 0xDFFF:
        msg = f"invalid character U+{cp:04X} (a lone surrogate)"
    else:
        esc = f"\\x{cp:02X}" if cp < 0x100 else f"\\u{cp:04X}"
        msg = (
            f'character U+{cp:04X} is not allowed; write it as an escape in double quotes ("{esc}")'
        )
    return YamlError(len(head), len(head[-1]) + 1, msg)


def _resolve(text: str, li: int, pos: int) -> Any:
    """Core-schema value of a plain scalar (validated by regex before any int()/float())."""
    c = text[0]
    if c in "0123456789+-.":
        if _INT.match(text):
            if len(text) - (c in "+-") > _MAX_DIGITS:  # newer Pythons refuse these: be the same
                msg = f"an integer with more than {_MAX_DIGITS} digits is not supported; quote it"
                raise YamlError(li + 1, pos + 1, msg)
            return int(text)
        if c == "0" and len(text) > 2:
            if _OCT.match(text):
                return int(text[2:], 8)
            if _HEX.match(text):
                return int(text[2:], 16)
        if _FLOAT.match(text):
            return float(text)
        if text in _NAN_WORDS:
            return float("nan")  # a fresh object: two NaN keys are not one key
    return _WORDS.get(text, text)


def _is_marker(line: str) -> bool:
    return line[:3] in ("---", "...") and line[3:4] in _BLOCK_SEP


class _Parser:
    def __init__(self, text: str, marks: bool) -> None:
        self.marks = marks
        if text[:1] == "\ufeff":
            text = text[1:]
        bad = _BAD_CHAR.search(text)
        if bad is not None:
            raise _bad_char_error(text, bad.start())
        self.lines: List[str] = _BREAK.split(text)
        self.count = len(self.lines)

    @staticmethod
    def err(li: int, pos: int, message: str) -> YamlError:
        return YamlError(li + 1, pos + 1, message)

    def _at(self, li: int, pos: int, kids: Any = None) -> _MaybeMark:
        """The mark of a node at 0-based (li, pos), if marks are being built."""
        return (li + 1, pos + 1, kids) if self.marks else None

    # ---------------------------------------------------------------- document and lines

    def document(self) -> Tuple[Any, _MaybeMark]:
        li, ind = self._next_content(0, header=True)
        if li < self.count and ind == 0 and self.lines[li][0] == "-" and _is_marker(self.lines[li]):
            self._header_rest(li)
            li, ind = self._next_content(li + 1)
        if li >= self.count:
            return None, (1, 1, None)
        col = ind
        value, mark, nxt, kind = self._block_node(li, col, -1, 0, _LINE)
        j, ind = self._next_content(nxt)
        if j < self.count:
            if kind == "plain":
                raise self.err(j, ind, _MSG_PLAIN_LINES)
            if kind in ("map", "seq"):  # a collection starts where its first key or '-' does
                msg = f"inconsistent indentation: the document starts at column {col + 1}"
                raise self.err(j, ind, msg)
            raise self.err(j, ind, "unexpected content after the document's top-level value")
        return value, mark

    def _next_content(self, j: int, header: bool = False) -> Tuple[int, int]:
        """Skip blank and comment lines; return (index, indentation) of the next content line."""
        lines = self.lines
        count = self.count
        while j < count:
            line = lines[j]
            rest = line.lstrip(" ")
            if rest and rest[0] != "#":
                ind = len(line) - len(rest)
                c = rest[0]
                if c == "\t":
                    raise self._tab(j, ind)
                if c in "\u3000\xa0":
                    raise self._wide_space(j, ind, c)
                if ind == 0 and c in "-.%":
                    self._check_marker(j, header)
                return j, ind
            j += 1
        return count, -1

    def _check_marker(self, j: int, header: bool) -> None:
        line = self.lines[j]
        if line[0] == "%" and header:
            raise self.err(j, 0, "directives (%YAML, %TAG) are not supported")
        if not _is_marker(line):
            return
        if line[0] == ".":
            raise self.err(j, 0, "the document end marker '...' is not supported")
        if not header:
            raise self.err(j, 0, "a second document ('---' after content) is not supported")

    def _header_rest(self, li: int) -> None:
        line = self.lines[li]
        q = _spaces(line, 3).end()
        if q < len(line):
            if line[q] == "\t":
                raise self._tab(li, q)
            if line[q] != "#" or q == 3:
                msg = "nothing but a comment may follow '---' on its line; start on the next line"
                raise self.err(li, q, msg)

    def _tab(self, li: int, pos: int, msg: str = "") -> YamlError:
        line = self.lines[li]
        rest = line[pos:].lstrip(" \t")
        if not rest:
            msg = "tabs are not allowed in blank or trailing space; remove the tab"
        elif rest[0] == "#":
            msg = "a tab before a comment is not allowed; use spaces"
        elif not line[:pos].strip(" "):
            msg = "tabs are not allowed for indentation; use spaces"
        return self.err(li, pos, msg or _MSG_TAB)

    def _wide_space(self, li: int, pos: int, c: str) -> YamlError:
        name = "ideographic space" if c == "\u3000" else "no-break space"
        msg = f"U+{ord(c):04X} ({name}) where the indentation ends: YAML reads it as text, not as "
        return self.err(li, pos, msg + "indentation; use ASCII spaces (or quote the value)")

    # ---------------------------------------------------------------- block collections

    def _block_node(self, li: int, pos: int, n: int, depth: int, ctx: int) -> _Node:
        """The node starting at (li, pos); n is the indentation of the parent collection."""
        line = self.lines[li]
        if ctx != _VALUE:
            m = _FAST_KEY.match(line, pos)
            if m is not None:
                text = m.group(1)
                return self._block_map(li, pos, depth + 1, _WORDS.get(text, text), m.end() - 1)
        m = _FAST_VALUE.match(line, pos)
        if m is not None:
            dq, sq, plain = m.groups()
            mark = self._at(li, pos)
            if plain is not None:
                return _resolve(plain, li, pos), mark, li + 1, "plain"
            return (dq if dq is not None else sq), mark, li + 1, "quoted"
        c = line[pos]
        if c == "-" and line[pos + 1 : pos + 2] in _BLOCK_SEP:
            if ctx == _VALUE:
                msg = "a block sequence cannot start on the same line as its key; "
                msg += "put '- ' on the next line"
                raise self.err(li, pos, msg)
            items, mark, nxt = self._block_seq(li, pos, depth + 1, False)
            return items, mark, nxt, "seq"
        if c in "[{":
            value, mark, eli, epos = self._flow(li, pos, depth)
            self._after(eli, epos, ctx, "flow", (li, pos))
            return value, mark, eli + 1, "flow"
        if c in "|>":
            text, nxt = self._block_scalar(li, pos, n)
            return text, self._at(li, pos), nxt, "block"
        value, eli, colon, kind = self._scalar_or_key(li, pos, ctx)
        if colon < 0:
            return value, self._at(li, pos), eli + 1, kind
        return self._block_map(li, pos, depth + 1, value, colon)

    def _scalar_or_key(self, li: int, pos: int, ctx: int) -> Tuple[Any, int, int, str]:
        """A quoted or plain scalar: (value, its last line, index of a key ':' or -1, kind)."""
        line = self.lines[li]
        c = line[pos]
        if c in "'\"":
            value, eli, epos = self._quoted(li, pos)
            colon = self._after(eli, epos, ctx, "quoted", (li, pos))
            if colon >= 0 and eli != li:
                raise self.err(li, pos, "a mapping key must fit on one line")
            return value, eli, colon, "quoted"
        self._check_plain_start(li, pos, line[pos + 1 : pos + 2], False)
        end = _plain_block(line, pos).end()
        text = line[pos:end]
        colon = self._after(li, end, ctx, "plain", (li, pos))
        if colon >= 0 and text == "<<":
            raise self.err(li, pos, "merge keys ('<<') are not supported; write the entries out")
        return _resolve(text, li, pos), li, colon, "plain"

    def _after(self, li: int, pos: int, ctx: int, kind: str, start: Tuple[int, int]) -> int:
        """Check the rest of the line after a node; return the index of a key ':' or -1."""
        line = self.lines[li]
        q = _spaces(line, pos).end()
        if q == len(line):
            return -1
        c = line[q]
        if c == "#":
            if q > pos:
                return -1
            raise self.err(li, q, "a comment needs a space before '#'")
        if c == ":" and line[q + 1 : q + 2] in _BLOCK_SEP:
            if kind == "flow":
                raise self.err(start[0], start[1], "a collection ([...] or {...}) cannot be a key")
            if ctx == _VALUE:
                if kind == "plain":
                    msg = "a plain value cannot contain ': ' or end with ':'; quote the whole value"
                else:
                    msg = "a mapping cannot start on the same line as its key; "
                    msg += "put it on the next line"
                raise self.err(li, q, msg)
            if line[q + 1 : q + 2] == "\t":
                raise self._tab(li, q + 1, "a tab after ':' is not allowed; use a space")
            return q
        if c == "\t":
            msg = (
                "a tab is not allowed in a plain scalar; quote the value" if kind == "plain" else ""
            )
            raise self._tab(li, q, msg)
        if c == ":" and q == pos and kind == "quoted":
            raise self.err(
                li, q, "':' after a key needs a space ('\"a\":1' is only valid inside {})"
            )
        what = "the closing quote" if kind == "quoted" else "the closing bracket"
        raise self.err(li, q, f"unexpected text after {what}")

    def _check_plain_start(self, li: int, pos: int, follow: str, flow: bool) -> None:
        """Reject indicators that cannot start a plain scalar, with a message for each."""
        c = self.lines[li][pos]
        sep = follow in (_FLOW_SEP if flow else _BLOCK_SEP)
        msg = ""
        if c in "&*":
            msg = "anchors and aliases are not supported: "
            msg += f"quote the value if '{c}' is meant literally"
        elif c == "!":
            msg = "tags are not supported: quote the value if '!' is meant literally"
        elif c in "%@`":
            msg = f"a plain scalar cannot start with '{c}': quote it"
        elif c == "?" and sep:
            msg = "explicit keys ('? ') are not supported"
        elif c == ":" and sep:
            msg = "a mapping key is missing before ':'"
        elif c == "?" and flow:
            # YAML 1.2 reads '?x' as text here; other loaders read a key: refuse both.
            # (':x' is text for them too, and is accepted; see _flow_map for keys.)
            msg = "a plain scalar inside [] or {} cannot start with '?': quote it"
        elif c == "-" and sep:
            msg = "'-' followed by a space cannot start a value inside [] or {}: quote it"
        elif c in "|>":
            msg = "block scalars (| and >) are not allowed inside [] or {}"
        elif c in ",[]{}#":
            msg = f"unexpected '{c}'"
        elif c == "\t":
            raise self._tab(li, pos)
        if msg:
            raise self.err(li, pos, msg)

    def _block_map(self, li: int, col: int, depth: int, key: Any, colon: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.err(li, col, f"nesting deeper than {MAX_DEPTH} levels")
        result: Dict[Any, Any] = {}
        kids: Optional[Dict[Any, Tuple[int, int, _MaybeMark]]] = {} if self.marks else None
        mark = self._at(li, col, kids)
        lines = self.lines
        while True:
            if colon - col > _MAX_KEY:
                raise self.err(li, col, _MSG_LONG_KEY)
            if key in result:
                raise self._duplicate(li, col, key, kids, False)
            line = lines[li]
            q = _spaces(line, colon + 1).end()
            if q == len(line) or line[q] == "#":
                empty = (li + 1, colon + 2)
                value, vmark, nxt, kind = self._below(li + 1, col, depth, True, empty)
            else:
                value, vmark, nxt, kind = self._block_node(li, q, col, depth, _VALUE)
            result[key] = value
            if kids is not None:
                kids[key] = (li + 1, col + 1, vmark)
            j, ind = self._next_content(nxt)
            if ind != col:
                if ind < col:
                    return result, mark, j, "map"
                raise self._deeper(j, ind, col, kind, "the keys of this mapping")
            li = j
            key, colon = self._map_key(li, col)

    def _map_key(self, li: int, col: int) -> Tuple[Any, int]:
        line = self.lines[li]
        m = _FAST_KEY.match(line, col)
        if m is not None:
            text = m.group(1)
            return _WORDS.get(text, text), m.end() - 1
        c = line[col]
        if c == "-" and line[col + 1 : col + 2] in _BLOCK_SEP:
            raise self.err(li, col, "a sequence entry ('- ') where a key is expected")
        if c in "[{":
            self._after(*self._flow(li, col, 0)[2:], _LINE, "flow", (li, col))
        elif c not in "|>":
            key, _, colon, kind = self._scalar_or_key(li, col, _LINE)
            if colon >= 0:
                return key, colon
            if kind == "plain" and ":" in line:
                raise self.err(li, col, "expected 'key: value': a ':' after a key needs a space")
        raise self.err(li, col, "expected 'key: value'")

    def _below(self, j0: int, n: int, depth: int, seq_ok: bool, empty: Tuple[int, int]) -> _Node:
        """The value of 'key:' or '-' with nothing after it: on the next lines, or null."""
        j, ind = self._next_content(j0)
        if j < self.count:
            if ind > n:
                return self._block_node(j, ind, n, depth, _LINE)
            if ind == n and seq_ok and self._dash(j, ind):
                items, mark, nxt = self._block_seq(j, ind, depth + 1, True)
                return items, mark, nxt, "seq"
        return None, self._at(empty[0] - 1, empty[1] - 1), j, "empty"

    def _dash(self, li: int, col: int) -> bool:
        line = self.lines[li]
        return line[col] == "-" and line[col + 1 : col + 2] in _BLOCK_SEP

    def _block_seq(
        self, li: int, col: int, depth: int, at_key: bool
    ) -> Tuple[Any, _MaybeMark, int]:
        """A block sequence whose dashes are at ``col``; ``at_key``: at its key's column."""
        if depth > MAX_DEPTH:
            raise self.err(li, col, f"nesting deeper than {MAX_DEPTH} levels")
        items: List[Any] = []
        kids: Optional[List[_MaybeMark]] = [] if self.marks else None
        mark = self._at(li, col, kids)
        lines = self.lines
        while True:
            line = lines[li]
            q = _spaces(line, col + 1).end()
            if q < len(line) and line[q] == "\t":
                raise self._tab(li, q, "a tab after '-' is not allowed; use a space")
            if q == len(line) or line[q] == "#":
                value, vmark, nxt, kind = self._below(li + 1, col, depth, False, (li + 1, col + 2))
            else:
                value, vmark, nxt, kind = self._block_node(li, q, col, depth, _COMPACT)
            items.append(value)
            if kids is not None:
                kids.append(vmark)
            j, ind = self._next_content(nxt)
            if ind != col:
                if ind < col:
                    return items, mark, j
                raise self._deeper(j, ind, col, kind, "the entries of this sequence")
            if not self._dash(j, col):
                if at_key:
                    return items, mark, j
                raise self.err(j, col, "expected a sequence entry ('- ') at this indentation")
            li = j

    def _deeper(self, j: int, ind: int, col: int, kind: str, what: str) -> YamlError:
        """A line indented more than its collection, after a complete entry."""
        if kind == "plain":
            line = self.lines[j]
            m = _PLAIN_BLOCK.match(line, ind)
            rest = line[m.end() :].lstrip(" ") if m else ""
            if not (rest[:1] == ":" and rest[1:2] in _BLOCK_SEP):
                return self.err(j, ind, _MSG_PLAIN_LINES)
        return self.err(j, ind, f"inconsistent indentation: {what} are at column {col + 1}")

    def _duplicate(
        self, li: int, pos: int, key: Any, kids: Optional[Dict[Any, Any]], flow: bool
    ) -> YamlError:
        if kids is None:  # the message names the first occurrence
            raise _NeedMarks
        first = kids[key]
        spelling = self._spelling(li, pos, flow)
        where = f"line {first[0]}, column {first[1]}"
        if isinstance(key, str):
            return self.err(li, pos, f"duplicate key {key!r} (first at {where})")
        earlier = self._spelling(first[0] - 1, first[1] - 1, flow)
        if earlier == spelling:
            return self.err(li, pos, f"duplicate key {spelling} (first at {where})")
        return self.err(li, pos, f"duplicate key {spelling} (equal to {earlier} at {where})")

    def _spelling(self, li: int, pos: int, flow: bool) -> str:
        """The source text of the one-line key scalar at (li, pos)."""
        line = self.lines[li]
        if line[pos] in "'\"":
            return line[pos : self._quoted(li, pos)[2]]
        end = (_plain_flow if flow else _plain_block)(line, pos).end()
        return line[pos:end]

    # ---------------------------------------------------------------- flow collections

    def _flow(self, li: int, pos: int, depth: int) -> _Flow:
        """A flow collection at (li, pos): (value, mark, line of the closer, index after it)."""
        if depth + 1 > MAX_DEPTH:
            raise self.err(li, pos, f"nesting deeper than {MAX_DEPTH} levels")
        if self.lines[li][pos] == "[":
            return self._flow_seq(li, pos, depth + 1)
        return self._flow_map(li, pos, depth + 1)

    def _fskip(self, li: int, pos: int, opener: Tuple[int, int]) -> Tuple[int, int, bool]:
        """Skip spaces, comments and line breaks inside a flow collection."""
        lines = self.lines
        crossed = False
        while True:
            line = lines[li]
            q = _spaces(line, pos).end()
            if q < len(line):
                c = line[q]
                if c == "#":
                    if q == pos and q > 0:
                        raise self.err(li, q, "a comment needs a space before '#'")
                elif c == "\t":
                    raise self._tab(li, q)
                else:
                    if crossed:
                        if c in "\u3000\xa0":
                            raise self._wide_space(li, q, c)
                        if q == 0 and c in "-." and _is_marker(line):
                            self._check_marker(li, False)
                    return li, q, crossed
            li += 1
            pos = 0
            crossed = True
            if li >= self.count:
                ol, op = opener
                c = lines[ol][op]
                raise self.err(ol, op, f"unclosed '{c}' (no matching '{']' if c == '[' else '}'}')")

    def _flow_node(self, li: int, pos: int, depth: int) -> Tuple[Any, _MaybeMark, int, int, str]:
        line = self.lines[li]
        c = line[pos]
        if c in "[{":
            value, mark, eli, epos = self._flow(li, pos, depth)
            return value, mark, eli, epos, "flow"
        if c in "'\"":
            value, eli, epos = self._quoted(li, pos)
            return value, self._at(li, pos), eli, epos, "quoted"
        self._check_plain_start(li, pos, line[pos + 1 : pos + 2], True)
        end = _plain_flow(line, pos).end()
        if end == pos:
            raise self.err(li, pos, f"unexpected '{c}'")
        return _resolve(line[pos:end], li, pos), self._at(li, pos), li, end, "plain"

    def _flat_seq(self, li: int, op: int) -> Optional[_Flow]:
        """A one-line sequence of simple scalars, or None to use the full rules."""
        line = self.lines[li]
        if not self.marks:
            names = _NAME_LIST.match(line, op)
            if names is not None:
                words = _NAMES.findall(line, names.start(1), names.end(1))
                if _WORDS.keys().isdisjoint(words):
                    return words, None, li, names.end()
        items: List[Any] = []
        kids: Optional[List[_MaybeMark]] = [] if self.marks else None
        pos = _spaces(line, op + 1).end()
        while line[pos : pos + 1] != "]":
            m = _FLOW_ITEM.match(line, pos)
            if m is None:
                return None
            dq, sq, plain, sep = m.groups()
            if plain is None:
                start = m.start(1 if dq is not None else 2) - 1  # at the opening quote
                items.append(dq if dq is not None else sq)
            else:
                start = m.start(3)
                items.append(_resolve(plain, li, start))
            if kids is not None:
                kids.append((li + 1, start + 1, None))
            if sep != ",":
                return (items, self._at(li, op, kids), li, m.end(4)) if sep == "]" else None
            pos = m.end()
        return items, self._at(li, op, kids), li, pos + 1

    def _flat_map(self, li: int, op: int) -> Optional[_Flow]:
        """A one-line mapping of simple keys and scalars, or None to use the full rules."""
        line = self.lines[li]
        result: Dict[Any, Any] = {}
        kids: Optional[Dict[Any, Tuple[int, int, _MaybeMark]]] = {} if self.marks else None
        pos = _spaces(line, op + 1).end()
        while line[pos : pos + 1] != "}":
            m = _FLOW_PAIR.match(line, pos)
            if m is None:
                return None
            qkey, pkey, dq, sq, plain, sep = m.groups()
            if qkey is not None:
                key, kpos = qkey, m.start(1) - 1
            else:
                key, kpos = _WORDS.get(pkey, pkey), m.start(2)
            if key in result or len(pkey if qkey is None else qkey) > 1000:  # errors: full rules
                return None
            if plain is not None:
                start = m.start(5)
                result[key] = _resolve(plain, li, start)
            else:
                start = m.start(3 if dq is not None else 4) - 1
                result[key] = dq if dq is not None else sq
            if kids is not None:
                kids[key] = (li + 1, kpos + 1, (li + 1, start + 1, None))
            if sep != ",":
                return (result, self._at(li, op, kids), li, m.end(6)) if sep == "}" else None
            pos = m.end()
        return result, self._at(li, op, kids), li, pos + 1

    def _flow_seq(self, ol: int, op: int, depth: int) -> _Flow:
        fast = self._flat_seq(ol, op)
        if fast is not None:
            return fast
        opener = (ol, op)
        items: List[Any] = []
        kids: Optional[List[_MaybeMark]] = [] if self.marks else None
        li, pos, _ = self._fskip(ol, op + 1, opener)
        while True:
            c = self.lines[li][pos]
            if c == "]":
                return items, self._at(ol, op, kids), li, pos + 1
            if c == ",":
                raise self.err(
                    li, pos, "empty entry in a flow sequence (two commas, or a leading one)"
                )
            value, vmark, li, pos, kind = self._flow_node(li, pos, depth)
            items.append(value)
            if kids is not None:
                kids.append(vmark)
            li, pos, crossed = self._fskip(li, pos, opener)
            c = self.lines[li][pos]
            if c == ",":
                li, pos, _ = self._fskip(li, pos + 1, opener)
            elif c != "]":
                raise self._flow_junk(li, pos, opener, crossed, kind)

    def _flow_junk(
        self, li: int, pos: int, opener: Tuple[int, int], crossed: bool, kind: str
    ) -> YamlError:
        """What is wrong where a ',' or the closer was expected inside a flow collection."""
        ol, op = opener
        closer = "]" if self.lines[ol][op] == "[" else "}"
        if crossed:
            opener_line = self.lines[ol]
            if pos <= len(opener_line) - len(opener_line.lstrip(" ")):
                # Back at (or left of) the indentation of the opener's line: a block
                # structure goes on, so the bracket was never closed.
                return self.err(ol, op, f"unclosed '{opener_line[op]}' (no matching '{closer}')")
            if kind == "plain":
                return self.err(li, pos, _MSG_PLAIN_LINES)
        c = self.lines[li][pos]
        if c == ":" and closer == "]":
            return self.err(li, pos, "a 'key: value' pair inside [...] is not supported; use {...}")
        if c == ":":
            return self.err(li, pos, "unexpected ':' after a flow mapping value; quote the value")
        return self.err(li, pos, f"expected ',' or '{closer}'")

    def _flow_map(self, ol: int, op: int, depth: int) -> _Flow:
        fast = self._flat_map(ol, op)
        if fast is not None:
            return fast
        opener = (ol, op)
        result: Dict[Any, Any] = {}
        kids: Optional[Dict[Any, Tuple[int, int, _MaybeMark]]] = {} if self.marks else None
        li, pos, _ = self._fskip(ol, op + 1, opener)
        while True:
            line = self.lines[li]
            c = line[pos]
            if c == "}":
                return result, self._at(ol, op, kids), li, pos + 1
            if c == ",":
                raise self.err(
                    li, pos, "empty entry in a flow mapping (two commas, or a leading one)"
                )
            if c in "[{":
                raise self.err(li, pos, "a collection ([...] or {...}) cannot be a key")
            if c == ":" and line[pos + 1 : pos + 2] not in _FLOW_SEP:
                # YAML 1.2 reads ':a' as the key; ruamel reads an empty key, PyYAML fails.
                msg = "a key inside {} cannot start with ':' (YAML loaders disagree on it): "
                raise self.err(li, pos, msg + "quote it")
            kl, kp = li, pos
            key, _, li, pos, kind = self._flow_node(li, pos, depth)
            line = self.lines[li]
            q = _spaces(line, pos).end()
            if li != kl or line[q : q + 1] != ":":
                raise self._no_colon(kl, kp, li, line[kp:pos], kind)
            if kind == "plain" and line[q + 1 : q + 2] not in _BLOCK_SEP:
                # YAML 1.2 ends the key here; other loaders read 'a:' as the key: refuse both.
                raise self.err(li, q, "':' after a plain key inside {} needs a space after it")
            if q - kp > _MAX_KEY:
                raise self.err(kl, kp, _MSG_LONG_KEY)
            if kind == "plain" and key == "<<":
                raise self.err(kl, kp, "merge keys ('<<') are not supported; write the entries out")
            if key in result:
                raise self._duplicate(kl, kp, key, kids, True)
            li, pos, _ = self._fskip(li, q + 1, opener)
            line = self.lines[li]
            c = line[pos]
            if c in ",}":
                value, vmark, kind = None, self._at(li, pos), "empty"
            elif c == ":" and line[pos + 1 : pos + 2] in _FLOW_SEP:
                # Not a plain scalar in YAML 1.2 (ruamel would read the text ':'): refuse.
                msg = "a value inside {} cannot be a lone ':' (no scalar starts there): quote it"
                raise self.err(li, pos, msg)
            else:
                value, vmark, li, pos, kind = self._flow_node(li, pos, depth)
            result[key] = value
            if kids is not None:
                kids[key] = (kl + 1, kp + 1, vmark)
            li, pos, crossed = self._fskip(li, pos, opener)
            c = self.lines[li][pos]
            if c == ",":
                li, pos, _ = self._fskip(li, pos + 1, opener)
            elif c != "}":
                raise self._flow_junk(li, pos, opener, crossed, kind)

    def _no_colon(self, kl: int, kp: int, li: int, text: str, kind: str) -> YamlError:
        if li != kl:
            return self.err(kl, kp, "a mapping key must fit on one line")
        if kind == "plain" and ":" in text:
            msg = f"missing ': ' after a key inside {{}}: YAML reads '{text}' as one key; "
            msg += "add a space after ':'"
            return self.err(kl, kp, msg)
        return self.err(kl, kp, "an entry of {...} needs ': value' after its key")

    # ---------------------------------------------------------------- quoted scalars

    def _quoted(self, li: int, pos: int) -> Tuple[str, int, int]:
        """A quoted scalar at (li, pos): (value, line of the closing quote, index after it)."""
        line = self.lines[li]
        if line[pos] == '"':
            m = _DQ_SIMPLE.match(line, pos + 1)
            if m is not None:
                return m.group(1), li, m.end()
            return self._double(li, pos)
        m = _SQ_SIMPLE.match(line, pos + 1)
        if m is not None:
            return m.group(1), li, m.end()
        return self._single(li, pos)

    def _next_quoted_line(self, li: int, opener: Tuple[int, int]) -> Tuple[int, int]:
        """Move past a line break inside a quoted scalar: (next non-blank line, empty lines)."""
        empties = 0
        while True:
            li += 1
            if li >= self.count:
                ol, op = opener
                kind = "double" if self.lines[ol][op] == '"' else "single"
                raise self.err(ol, op, f"unclosed {kind} quote")
            line = self.lines[li]
            if line[:1] in "-." and _is_marker(line):
                self._check_marker(li, False)
            if line.strip(" \t"):
                return li, empties
            empties += 1

    def _double(self, ol: int, op: int) -> Tuple[str, int, int]:
        parts: List[str] = []
        li, start = ol, op + 1
        while True:
            line = self.lines[li]
            end = _dq_body(line, start).end()
            seg = line[start:end]
            if end < len(line) and line[end] == '"':
                parts.append(self._unescape(seg, li, start))
                return "".join(parts), li, end + 1
            escaped_break = end < len(line)  # the body stops early only at a final backslash
            if not escaped_break:
                seg = _trim_dq(seg)
            parts.append(self._unescape(seg, li, start))
            li, empties = self._next_quoted_line(li, (ol, op))
            parts.append("\n" * empties if empties or escaped_break else " ")
            start = _blanks(self.lines[li], 0).end()

    def _unescape(self, seg: str, li: int, start: int) -> str:
        if "\\" not in seg:
            return seg
        out: List[str] = []
        i = 0
        while True:
            j = seg.find("\\", i)
            if j < 0:
                out.append(seg[i:])
                return "".join(out)
            out.append(seg[i:j])
            m = _ESCAPE.match(seg, j)
            if m is None:
                raise self._bad_escape(seg, j, li, start + j)
            single, hex2, hex4, hex8 = m.groups()
            if single is not None:
                out.append(_ESCAPES[single])
            else:
                cp = int(hex2 or hex4 or hex8, 16)
                if 0xD800 <= cp <= 0xDFFF:
                    msg = f"escape '{m.group()}' is a surrogate; write the character as \\UXXXXXXXX"
                    raise self.err(li, start + j, msg + " (e.g. \\U0001F600)")
                if cp > 0x10FFFF:
                    raise self.err(li, start + j, f"escape '{m.group()}' is above U+10FFFF")
                out.append(chr(cp))
            i = m.end()

    def _bad_escape(self, seg: str, j: int, li: int, pos: int) -> YamlError:
        c = seg[j + 1 : j + 2]
        if c in ("x", "u", "U"):
            digits = {"x": 2, "u": 4, "U": 8}[c]
            return self.err(li, pos, f"escape '\\{c}' needs {digits} hex digits")
        msg = f"unknown escape '\\{c}'; write '\\\\' for a backslash, or use single quotes"
        return self.err(li, pos, msg)

    def _single(self, ol: int, op: int) -> Tuple[str, int, int]:
        parts: List[str] = []
        li, start = ol, op + 1
        while True:
            line = self.lines[li]
            end = _sq_body(line, start).end()
            seg = line[start:end]
            if end < len(line):  # the body stops only at a lone closing quote
                parts.append(seg.replace("''", "'"))
                return "".join(parts), li, end + 1
            parts.append(seg.rstrip(" \t").replace("''", "'"))
            li, empties = self._next_quoted_line(li, (ol, op))
            parts.append("\n" * empties if empties else " ")
            start = _blanks(self.lines[li], 0).end()

    # ---------------------------------------------------------------- block scalars

    def _block_scalar(self, li: int, pos: int, n: int) -> Tuple[str, int]:
        """A '|' or '>' scalar whose parent collection is indented n: (text, next line)."""
        chomp, inc = self._block_header(li, pos)
        lines = self.lines
        count = self.count
        j = li + 1
        if inc:
            if n < 0:
                msg = "an indentation indicator on a top-level block scalar is not supported"
                raise self.err(li, pos, msg)
            indent = n + inc
        else:
            indent = self._detect_indent(j, n + 1)
        prefix = " " * indent
        body: List[Any] = []  # text after the indentation, or None for an empty line
        k = j
        while k < count:
            line = lines[k]
            if line.startswith(prefix) and not (indent == 0 and _is_marker(line)):
                body.append(line[indent:] if len(line) > indent else None)
            elif not line.lstrip(" "):
                body.append(None)
            else:
                s = len(line) - len(line.lstrip(" "))
                if s > n and s > 0 and line[s] not in "#\t":
                    msg = "this line is indented less than the block scalar's first line "
                    msg += f"(column {indent + 1})"
                    raise self.err(k, s, msg)
                break
            k += 1
        return _chomp(body, j, count, chomp, lines[li][pos] == ">"), k

    def _block_header(self, li: int, pos: int) -> Tuple[str, int]:
        line = self.lines[li]
        m = _BS_HEADER.match(line, pos)
        assert m is not None
        chomp1, digit, chomp2 = m.groups()
        if digit == "0":
            raise self.err(li, pos, "a block scalar indentation indicator must be 1-9")
        q = _spaces(line, m.end()).end()
        ok_end = q == len(line) or (line[q] == "#" and q > m.end())
        if (chomp1 and chomp2) or not ok_end:
            if q < len(line) and line[q] == "\t":
                raise self._tab(li, q)
            if q < len(line) and line[q] == "#":
                raise self.err(li, q, "a comment needs a space before '#'")
            msg = "invalid block scalar header: after '|' or '>' come only "
            msg += "'-' or '+', a digit 1-9 and a comment"
            raise self.err(li, pos, msg)
        return chomp1 or chomp2, int(digit) if digit else 0

    def _detect_indent(self, j: int, least: int) -> int:
        """Indentation of a block scalar: that of its first non-empty line (at least ``least``)."""
        lines = self.lines
        deepest, where = 0, j
        for k in range(j, self.count):
            line = lines[k]
            rest = line.lstrip(" ")
            s = len(line) - len(rest)
            if rest:
                if s < least or (s == 0 and _is_marker(line)):  # only empty lines: no content
                    break
                if deepest > s:
                    msg = "a leading blank line of a block scalar has more spaces "
                    msg += "than its first text line"
                    raise self.err(where, deepest - 1, msg)
                return max(s, least)
            if s > deepest:
                deepest, where = s, k
        return max(deepest, least)


def _trim_dq(seg: str) -> str:
    """Drop the unescaped spaces and tabs before a line break in a double-quoted scalar."""
    trimmed = seg.rstrip(" \t")
    if len(trimmed) < len(seg):
        backslashes = len(trimmed) - len(trimmed.rstrip("\\"))
        if backslashes % 2:  # '\ ' or '\<TAB>' at the end is content
            trimmed = seg[: len(trimmed) + 1]
    return trimmed


def _chomp(body: List[Any], j: int, count: int, chomp: str, folded: bool) -> str:
    """Join a block scalar's lines (body[i] is line j+i) and apply the chomping indicator."""
    last = len(body) - 1
    while last >= 0 and body[last] is None:
        last -= 1
    # A line has a break after it unless it is the last line of the text.
    breaks_after = sum(1 for i in range(last + 1, len(body)) if j + i < count - 1)
    if last < 0:
        return "\n" * breaks_after if chomp == "+" else ""
    text = _fold(body[: last + 1]) if folded else "\n".join(x or "" for x in body[: last + 1])
    if chomp == "-":
        return text
    last_break = "\n" if j + last < count - 1 else ""
    if chomp == "+":
        return text + last_break + "\n" * breaks_after
    return text + last_break


def _fold(lines: List[Any]) -> str:
    """'>' folding: a single break between two text lines not starting with a space or tab
    becomes a space; otherwise breaks are kept; each empty line is one '\\n'."""
    out: List[str] = []
    prev = None
    empties = 0
    for line in lines:
        if line is None:
            empties += 1
            continue
        if prev is None:
            out.append("\n" * empties)
        elif prev[0] not in " \t" and line[0] not in " \t":
            out.append("\n" * empties if empties else " ")
        else:
            out.append("\n" * (empties + 1))
        out.append(line)
        prev = line
        empties = 0
    return "".join(out)
