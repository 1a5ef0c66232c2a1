"""Cost and token metrics of attempts: pure parsing and summing (CONTRACT.md, "Metrics and
budget").

A task may write one JSON object per line to the file named by ``$ORCH_METRICS``; the numbers
of each key are summed over lines and attempts. With ``metrics: stdout-json`` the last line of
the attempt's stdout that is a JSON object is read too, in the shape ``claude -p
--output-format json`` and similar agents print (``total_cost_usd`` or ``cost_usd``,
``usage.input_tokens``, ``usage.output_tokens``). A line that is not a JSON object, or a value
that is not a finite number, is ignored and counted in ``metrics_errors``: never fatal.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["COST", "MAX_METRICS_BYTES", "add", "from_metrics_lines", "from_stdout_json"]

COST = "cost_usd"
# Most bytes of an attempt's metrics file that are read: a runaway writer cannot fill memory.
MAX_METRICS_BYTES = 1 << 20

Numbers = Dict[str, float]


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def from_metrics_lines(data: bytes) -> Tuple[Numbers, int]:
    """The summed numbers of ``data`` (lines of JSON objects) and how many lines were bad.

    A torn last line (no newline yet) is ignored without counting: the writer may be midway.
    """
    sums: Numbers = {}
    errors = 0
    lines = data.split(b"\n")
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            errors += 1
            continue
        if not isinstance(obj, dict):
            errors += 1
            continue
        for key, value in obj.items():
            number = _number(value)
            if number is None:
                errors += 1
                continue
            sums[str(key)] = sums.get(str(key), 0.0) + number
    return sums, errors


def from_stdout_json(tail: bytes) -> Optional[Numbers]:
    """The metrics of the last JSON-object line of an attempt's stdout (its bounded tail)."""
    for raw in reversed(tail.split(b"\n")):
        line = raw.strip()
        if not line.startswith(b"{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        found: Numbers = {}
        cost = _number(obj.get("total_cost_usd", obj.get(COST)))
        if cost is not None:
            found[COST] = cost
        usage = obj.get("usage")
        if isinstance(usage, dict):
            for key in ("input_tokens", "output_tokens"):
                number = _number(usage.get(key))
                if number is not None:
                    found[key] = number
        return found
    return None


def add(total: Mapping[str, float], more: Mapping[str, float]) -> Numbers:
    """Key-by-key sum; integers stay integers when both sides are whole."""
    out = dict(total)
    for key, value in more.items():
        out[key] = _tidy(out.get(key, 0.0) + value)
    return out


def _tidy(value: float) -> float:
    # Token counts are whole numbers: shown and stored as such; costs keep their cents.
    return int(value) if value == int(value) and abs(value) < 2**53 else round(value, 10)
