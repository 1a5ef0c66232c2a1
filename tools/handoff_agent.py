#!/usr/bin/env python3
"""A tiny agent pair showing the ORCH_CONTEXT handoff (standard library only).

    python3 tools/handoff_agent.py produce --scan DIR --out FILE
    python3 tools/handoff_agent.py consume --out FILE

``produce`` measures the Python files under DIR (files, lines, largest modules) and writes the
result as JSON to FILE; the plan declares FILE in the task's ``outputs`` so orch collects it.

``consume`` runs downstream: it reads the JSON file named by $ORCH_CONTEXT, loads every
``.json`` artifact its dependencies produced (their ``artifact_paths``, copies kept in the run
directory), prints a summary and writes it as Markdown to FILE. It exits 2 with a one-line
message when it is not run by orch or a dependency left nothing to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Tuple


def _measure(root: str) -> Dict[str, Any]:
    sizes: List[Tuple[int, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    sizes.append((sum(1 for _ in f), os.path.relpath(path, root)))
    sizes.sort(key=lambda item: (-item[0], item[1]))
    return {
        "scanned": root,
        "files": len(sizes),
        "lines": sum(n for n, _ in sizes),
        "largest": [{"path": p, "lines": n} for n, p in sizes[:3]],
        "produced_by": {
            "run_id": os.environ.get("ORCH_RUN_ID"),
            "task_id": os.environ.get("ORCH_TASK_ID"),
            "attempt": os.environ.get("ORCH_ATTEMPT"),
        },
    }


def _produce(scan: str, out: str) -> int:
    if not os.path.isdir(scan):
        print(f"handoff_agent: {scan}: not a directory", file=sys.stderr)
        return 2
    result = _measure(scan)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, out)
    print(f"measured {scan}: {result['files']} files, {result['lines']} lines -> {out}")
    return 0


def _load_context() -> Dict[str, Any]:
    path = os.environ.get("ORCH_CONTEXT")
    if not path:
        raise SystemExit("handoff_agent: ORCH_CONTEXT is not set (run me through orch)")
    with open(path, encoding="utf-8") as f:
        context: Dict[str, Any] = json.load(f)
    if context.get("schema_version") != 1:
        raise SystemExit(f"handoff_agent: unsupported context schema in {path}")
    return context


def _upstream_results(context: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    results = []
    for dep_id, dep in context["dependencies"].items():
        files = [p for p in dep["artifact_paths"] if p.endswith(".json")]
        if dep["status"] != "SUCCESS" or not files:
            raise SystemExit(f"handoff_agent: dependency {dep_id!r} left no JSON result")
        for path in files:
            with open(path, encoding="utf-8") as f:
                results.append((dep_id, json.load(f)))
    return results


def _consume(out: str) -> int:
    context = _load_context()
    results = _upstream_results(context)
    lines = [f"# Summary by {context['task_id']} (run {context['run_id']})", ""]
    for dep_id, data in results:
        biggest = ", ".join(f"{m['path']} ({m['lines']})" for m in data["largest"])
        lines.append(
            f"- {dep_id}: {data['scanned']}/ has {data['files']} Python files, "
            f"{data['lines']} lines; largest: {biggest or 'none'}"
        )
    total = sum(int(data["lines"]) for _, data in results)
    lines += ["", f"Total: {total} lines in {len(results)} measured trees."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="handoff_agent.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    produce = sub.add_parser("produce", help="measure a directory, write JSON")
    produce.add_argument("--scan", required=True, metavar="DIR")
    produce.add_argument("--out", required=True, metavar="FILE")
    consume = sub.add_parser("consume", help="summarize the dependencies' JSON results")
    consume.add_argument("--out", required=True, metavar="FILE")
    args = parser.parse_args(argv)
    if args.command == "produce":
        return _produce(args.scan, args.out)
    return _consume(args.out)


if __name__ == "__main__":
    sys.exit(main())
