"""A seeded generator of YAML documents for the differential tests of orch.yamlsub.

``generate(rnd)`` returns a ``Doc``: the text, and the reject-list features deliberately put in
it (``flags``: category name -> regex the parser's error message must match). A document with no
flags is valid YAML 1.2 inside the subset by construction; one with flags contains at least one
thing YAML_SUBSET.md rejects. The generator never relies on the parser under test.

What it produces: nested block mappings and sequences with any indentation width, sequences at
their key's column, compact ``- key:`` and ``- - x`` entries, ``-`` alone before a nested block,
flow collections (nested, empty, trailing commas, spread over lines at any column, comments after
commas, JSON-like keys), plain scalars that look like numbers, bools or null, single- and
double-quoted scalars with escapes and line folding, block scalars with every chomping and
indentation indicator, comments, blank lines, BOM, ``---`` and CR / CRLF line ends.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

__all__ = ["Doc", "generate"]


class Doc(NamedTuple):
    text: str
    flags: Dict[str, str]  # reject category -> regex for our error message


# Plain scalars, safe in block context (one line, no ': ', no ' #', no leading indicator).
PLAIN_COMMON = [
    "a", "b", "foo", "bar baz", "x  y", "hello world", "0", "012", "+7", "-3", "-0", "0o17",
    "0x1F", "0xff", "1e3", "3.10", "1.", ".5", "-.5e-3", "+1.5E+2", "1e400", ".inf", "-.Inf",
    "+.INF", ".NaN", "1_000", "0b101", "0X1F", "-0x1F", "+0o17", "0o8", "inf", "nan", "-.nan",
    "2024-01-01", "12:30", "12:30:45", "1.2.3", "１２", "١٢", "=", "None", "true", "True",
    "TRUE", "false", "False", "FALSE", "~", "null", "Null", "NULL", "yes", "no", "on", "off",
    "y", "n", "a:b", "http://h:80/#x", "a#b", "-x", "--x", ":x", "it's", 'say "hi"', "末尾\u3000",
    "é", "\U0001f600", "x\xa0y", "a#", "v1.2", "-1.5", "e3", "0x", "%x%", "a!b", "a&b", "a*b",
    "a|b", "a>b", "a'b", "@home", "a@b", "a`b",
]  # fmt: skip
PLAIN_BLOCK_ONLY = ["?x", "a,b", "a]b", "a}b", "[x", "x]", "{x"]  # '[x' etc. are fixed below
# '?x' is a key in some loaders' flow context, ':x' an error in PyYAML's (our fallback oracle).
PLAIN_FLOW_BAD = ("?x", ":x", "%x%", "@home")

# Keys with their resolved values (distinct under Python equality, so no accidental dups).
KEYS: List[Tuple[str, Any]] = [
    ("a", "a"), ("b", "b"), ("c", "c"), ("id", "id"), ("cmd", "cmd"), ("my key", "my key"),
    ("0o7", 7), ("0x10", 16), ("2.5", 2.5), ("TRUE", True), ("null", None), ('"q"', "q"),
    ("'s p'", "s p"), ("名前", "名前"), ("a:b", "a:b"), ("-k", "-k"), ("False", False),
    ('"a b"', "a b"), ("x.y", "x.y"), ("3.0", 3.0), ("yes", "yes"), ("'1'", "1"), ('"\\t"', "\t"),
]  # fmt: skip

DQ_ESCAPES = [
    "\\0", "\\a", "\\b", "\\t", "\\\t", "\\n", "\\v", "\\f", "\\r", "\\e", "\\ ", '\\"', "\\/",
    "\\\\", "\\N", "\\_", "\\L", "\\P", "\\x41", "\\xe9", "\\u3042", "\\U0001F600", "\\u00e9",
]  # fmt: skip
TEXT_CHARS = "abc xyz:#,[]{}'!&*|>%@`-?=\t\u3000é😀\\"


class _Gen:
    def __init__(self, rnd: random.Random) -> None:
        self.r = rnd
        self.flags: Dict[str, str] = {}
        self.inject = rnd.random() < 0.3
        self.anchors = 0

    # ------------------------------------------------------------------ helpers

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def flag(self, category: str, regex: str) -> bool:
        """Decide to inject a reject feature here (at most a few per document)."""
        if not self.inject or len(self.flags) >= 2 or not self.chance(0.08):
            return False
        self.flags[category] = regex
        return True

    def comment(self) -> str:
        return self.r.choice(["", "", "", "  # c", " # note: x, [y]", " #", " # é #"])

    # ------------------------------------------------------------------ scalars

    def plain(self, flow: bool) -> str:
        pool = PLAIN_COMMON if flow else PLAIN_COMMON + PLAIN_BLOCK_ONLY
        text = self.r.choice(pool)
        if flow:
            text = text if text not in PLAIN_FLOW_BAD else "ok"
        elif text[0] in "[{":
            text = "x" + text
        if text[0] in "%@`":
            text = "v" + text
        return text

    def single(self, multiline: bool) -> Tuple[str, List[str]]:
        parts = ["".join(self.r.choice("ab '#:,[]\\\"é\t") for _ in range(self.r.randint(0, 6)))]
        lines: List[str] = []
        if multiline:
            for _ in range(self.r.randint(1, 3)):
                if self.chance(0.3):
                    lines.append(" " * self.r.randint(0, 3))  # an empty line
                lines.append(" " * self.r.randint(0, 6) + self.r.choice(["x", "y z", "'' q", "#h"]))
        text = "'" + parts[0].replace("'", "''")
        if not lines:
            return text + "'", []
        return text, [*lines[:-1], lines[-1] + "'"]

    def double(self, multiline: bool) -> Tuple[str, List[str]]:
        def piece() -> str:
            out = []
            for _ in range(self.r.randint(0, 5)):
                if self.chance(0.35):
                    out.append(self.r.choice(DQ_ESCAPES))
                else:
                    out.append(self.r.choice("ab #:,'[]{}é\t "))
            return "".join(out)

        bad = ""
        if self.flag("bad-escape", r"escape"):
            bad = self.r.choice(["\\q", "\\'", "\\u12", "\\ud83d\\ude00", "\\U00110000", "\\x4g"])
        first = '"' + piece() + bad
        if not multiline:
            return first + '"', []
        lines = []
        first += self.r.choice(["", "  ", "\\", "\\ ", "\t"])
        for _ in range(self.r.randint(1, 3)):
            if self.chance(0.3):
                lines.append(self.r.choice(["", "  ", " \t"]))
            end = self.r.choice(["", " ", "\\", "\\ ", ""])
            lines.append(
                " " * self.r.randint(0, 5) + self.r.choice(["x", "y z", "#q"]) + piece() + end
            )
        last = lines[-1]
        if (len(last) - len(last.rstrip("\\"))) % 2:
            last += "n"  # an odd backslash would escape the closing quote
        return first, [*lines[:-1], last + '"']

    def scalar(self, flow: bool) -> Tuple[str, List[str]]:
        """An inline scalar: (text on this line, continuation lines of a multi-line quote)."""
        roll = self.r.random()
        if roll < 0.5:
            text = self.plain(flow)
            if self.flag("anchor", r"anchors and aliases"):
                text = self.r.choice(["&a1 ", "*a1", "&x "]) + (
                    "" if text.startswith("*") else text
                )
            elif self.flag("tag", r"tags are not supported"):
                text = self.r.choice(["!!str ", "!x ", "! "]) + text
            return text, []
        if roll < 0.75:
            return self.single(self.chance(0.3))
        return self.double(self.chance(0.3))

    def block_scalar(self, n: int) -> Tuple[str, List[str]]:
        """A '|' or '>' header and its content lines; n is the parent's indentation."""
        style = self.r.choice("|>")
        chomp = self.r.choice(["", "-", "+"])
        explicit = self.chance(0.35) and n >= 0
        step = self.r.randint(1, 4)
        indent = max(n, 0) + step if n >= 0 else self.r.randint(0, 3)
        if n < 0 and indent == 0 and self.chance(0.5):
            indent = 2
        header = style
        if explicit:
            digit = str(indent - n)
            header += chomp + digit if self.chance(0.5) else digit + chomp
        else:
            header += chomp
        if n < 0 and self.flag("root-indicator", r"indentation indicator on a top-level"):
            header = style + "1"
        header += self.r.choice(["", "", " # head"])
        lines: List[str] = []
        if self.chance(0.3):
            lines.append(" " * self.r.randint(0, indent))  # leading empty line
        first = True
        for _ in range(self.r.randint(0, 4)):
            kind = self.r.random()
            if kind < 0.15 and not first:
                lines.append(" " * self.r.randint(0, indent))
            elif kind < 0.25 and not first:
                lines.append(" " * (indent + self.r.randint(1, 3)))  # whitespace kept as text
            else:
                extra = "" if first and not explicit else self.r.choice(["", "", " ", "  ", "\t"])
                body = "".join(self.r.choice(TEXT_CHARS) for _ in range(self.r.randint(1, 8)))
                body = body.lstrip(" \t") or "t"
                if indent == 0 and body[:1] in "-.%#":
                    body = "t" + body
                lines.append(" " * indent + extra + body + self.r.choice(["", " ", "  "]))
                first = False
        for _ in range(self.r.randint(0, 2)):
            lines.append(" " * self.r.randint(0, indent))
        if first:
            # Without text, spaces on blank lines decide the indentation in some loaders and
            # make a following comment line text in YAML 1.2: keep such scalars unambiguous.
            lines = ["" for _ in lines]
        return header, lines

    # ------------------------------------------------------------------ flow

    def flow(self, depth: int, multiline: bool, indent: int) -> str:
        if depth > 2 or self.chance(0.35):
            text, more = self.scalar(True) if self.chance(0.6) else (self.plain(True), [])
            return "\n".join([text, *more])
        if self.chance(0.5):
            return self.flow_seq(depth, multiline, indent)
        return self.flow_map(depth, multiline, indent)

    def sep(self, multiline: bool, indent: int) -> str:
        if multiline and self.chance(0.4):
            comment = self.r.choice(["", "", " # c", " # x, y"])
            blank = "\n" if self.chance(0.2) else ""
            return comment + "\n" + blank + " " * self.r.randint(0, indent + 4)
        return self.r.choice(["", " ", "  "])

    def flow_seq(self, depth: int, multiline: bool, indent: int) -> str:
        items = []
        for _ in range(self.r.randint(0, 3)):
            items.append(self.flow(depth + 1, multiline, indent))
        if items and self.flag("pair-in-seq", r"pair inside \[\.\.\.\]"):
            items[0] = "k: v"
        if self.flag("dash-in-flow", r"'-' followed by a space"):
            items.append("-")
        if self.flag("question-in-flow", r"cannot start with '\?'"):
            items.append("?x")
        if items and self.flag("empty-entry", r"empty entry"):
            items.insert(0, "")  # a leading comma
        out = "[" + self.sep(multiline, indent)
        for i, item in enumerate(items):
            out += item + self.sep(multiline, indent)
            if i < len(items) - 1 or self.chance(0.3):
                out += "," + self.sep(multiline, indent)
        return out + "]"

    def flow_map(self, depth: int, multiline: bool, indent: int) -> str:
        keys = self.r.sample(KEYS, self.r.randint(0, 3))
        out = "{" + self.sep(multiline, indent)
        entries = []
        for key, _ in keys:
            if key.startswith("'") or key.startswith('"'):
                colon = self.r.choice([":", ": ", " : "])  # JSON-like adjacency
            else:
                colon = self.r.choice([": ", " : ", ":  "])
            if self.chance(0.1):
                entries.append(key + colon.rstrip() + " ")  # empty value
                continue
            value = self.flow(depth + 1, multiline, indent)
            entries.append(key + colon + value)
        if self.flag("flow-key-no-value", r"needs ': value'|missing ': '|needs a space after it"):
            entries.append(self.r.choice(["lonely", "k:1"]))
        if keys and self.flag("dup", r"duplicate key"):
            entries.append(keys[0][0] + ": dup")
        for i, entry in enumerate(entries):
            out += entry + self.sep(multiline, indent)
            if i < len(entries) - 1 or self.chance(0.3):
                out += "," + self.sep(multiline, indent)
        return out + "}"

    # ------------------------------------------------------------------ block

    def inline_value(self, n: int, depth: int) -> Tuple[str, List[str]]:
        """What follows 'key: ' or '- ' on the same line, and the lines it continues on."""
        roll = self.r.random()
        if roll < 0.55:
            text, more = self.scalar(False)
            if more or not text:
                return text, more
            if text[0] not in "'\"" and self.flag("multiline-plain", r"plain scalar cannot span"):
                return text, [" " * (n + 2) + "more words"]
            return text + self.comment(), more
        if roll < 0.75:
            multiline = self.chance(0.4)
            text = self.flow(1, multiline, n + 1)
            lines = text.split("\n")
            if text[0] in "[{'\"" and self.flag("glued-comment", r"comment needs a space"):
                lines[-1] += "#c"
            else:
                lines[-1] += self.comment()
            return lines[0], lines[1:]
        return self.block_scalar(n)

    def mapping(self, indent: int, depth: int) -> List[str]:
        lines: List[str] = []
        keys = self.r.sample(KEYS, self.r.randint(1, 3))
        for i, (key, _) in enumerate(keys):
            if i:
                lines.extend(self.filler(indent))
            if self.flag("merge", r"merge keys"):
                key = "<<"
            elif self.flag("explicit", r"explicit keys"):
                key = "? " + key
            elif self.flag("collection-key", r"cannot be a key"):
                key = "[k]"
            elif self.flag("long-key", r"longer than 1024"):
                key = "k" * 1100
            colon = self.r.choice([":", ":", " :"])
            prefix = " " * indent + key + colon
            if i > 0 and self.flag("wide-indent", r"where the indentation ends"):
                prefix = " " * indent + "\u3000" + key + colon
            lines.extend(self.entry_value(prefix, indent, depth, seq_ok=True))
            if i == len(keys) - 1 and self.flag("dup", r"duplicate key"):
                lines.append(" " * indent + key + ": again")
        return lines

    def sequence(self, indent: int, depth: int) -> List[str]:
        lines: List[str] = []
        for i in range(self.r.randint(1, 3)):
            if i:
                lines.extend(self.filler(indent))
            roll = self.r.random()
            if roll < 0.25 and depth < 3:
                # compact: '- key: v' / '- - x' with the nested block at the column after '- '
                gap = self.r.randint(1, 3)
                inner = self.block(indent + 1 + gap, depth + 1)
                head = " " * indent + "-" + " " * gap + inner[0][indent + 1 + gap :]
                lines.append(head)
                lines.extend(inner[1:])
            else:
                lines.extend(self.entry_value(" " * indent + "-", indent, depth, seq_ok=False))
        return lines

    def entry_value(self, prefix: str, n: int, depth: int, seq_ok: bool) -> List[str]:
        """Lines for 'key:' / '-' (given as prefix) and its value; n is the parent's indent."""
        roll = self.r.random()
        if roll < 0.5 or depth >= 3:
            if self.chance(0.1):
                return [prefix + self.comment()]  # null
            sep = " "
            if self.flag("tab", r"tab"):
                sep = self.r.choice(["\t", " \t"])
            text, more = self.inline_value(n, depth)
            return [prefix + sep + text, *more]
        head = [prefix + self.comment()]
        head.extend(self.filler(n + 1))
        if roll < 0.6:
            # a scalar on the next line, indented
            text, more = self.scalar(False)
            return [*head, " " * (n + self.r.randint(1, 3)) + text, *more]
        if seq_ok and roll < 0.7:
            return head + self.sequence(n, depth + 1)  # a sequence at its key's column
        width = self.r.randint(1, 4)
        return head + self.block(n + width, depth + 1)

    def block(self, indent: int, depth: int) -> List[str]:
        if self.chance(0.55):
            return self.mapping(indent, depth)
        return self.sequence(indent, depth)

    def filler(self, indent: int) -> List[str]:
        """Blank and comment lines between entries, at any column."""
        out = []
        while self.chance(0.15):
            # Blank lines hold at most the collection's indentation: deeper ones after a block
            # scalar without text would make YAML 1.2 and ruamel disagree (see block_scalar).
            spaces = " " * self.r.randint(0, indent)
            out.append(self.r.choice(["", " " * self.r.randint(0, 6) + "# comment", spaces]))
        if self.flag("tab-line", r"tab"):
            out.append(self.r.choice(["\t", "  \t", "\t# c"]))
        return out

    # ------------------------------------------------------------------ document

    def document(self) -> str:
        head: List[str] = []
        if self.chance(0.2):
            head.append("# plan")
        if self.flag("directive", r"directives"):
            head.append("%YAML 1.2")
            head.append("---")
        elif self.chance(0.2):
            head.append(self.r.choice(["---", "--- # doc", "---  "]))
        roll = self.r.random()
        if roll < 0.75:
            body = self.block(self.r.choice([0, 0, 0, 1, 2]), 0)
        elif roll < 0.88:
            body = self.flow(0, self.chance(0.5), 0).split("\n")
        elif roll < 0.95:
            header, lines = self.block_scalar(-1)
            body = [header, *lines]
        else:
            text, more = self.scalar(False)
            body = [text, *more]
        if self.flag("after-doc-start", r"nothing but a comment"):
            head = ["--- {a: 1}"]
            body = []
        tail: List[str] = []
        if self.flag("doc-end", r"document end marker"):
            tail.append("...")
        elif self.flag("second-doc", r"second document"):
            tail.extend(["---", "x: 1"])
        text = "\n".join(head + body + tail)
        if self.chance(0.9):
            text += "\n"
        if self.flag("badchar", r"is not allowed|byte order mark"):
            ch = self.r.choice(["\x85", "\u2028", "\x07", "\ufeff", "\x7f", "\x9b"])
            pos = self.r.randint(1, len(text))  # a U+FEFF at 0 would be a BOM
            text = text[:pos] + ch + text[pos:]
        return text


def _line_ends(rnd: random.Random, text: str) -> str:
    roll = rnd.random()
    if roll < 0.1:
        return text.replace("\n", "\r\n")
    if roll < 0.15:
        return text.replace("\n", "\r")
    if roll < 0.2:
        return "".join(rnd.choice(["\n", "\r\n", "\r"]) if c == "\n" else c for c in text)
    return text


def generate(rnd: random.Random) -> Doc:
    gen = _Gen(rnd)
    text = gen.document()
    if "badchar" not in gen.flags:
        text = _line_ends(rnd, text)
    if rnd.random() < 0.05:
        text = "\ufeff" + text
    return Doc(text, dict(gen.flags))


def sample(seed: int, count: int) -> List[Optional[Doc]]:
    rnd = random.Random(seed)
    return [generate(rnd) for _ in range(count)]
