#!/usr/bin/env python3
"""Look at a final_report.md as a reader would: Markdown and Mermaid drawn by headless Chromium.

    python3 scripts/look_report.py RUN_DIR_OR_REPORT.md [--out DIR]
    python3 scripts/look_report.py --demo 200 [--out DIR]   # a failing 200-task run first

Renders the report with `marked` (GitHub-like Markdown) and `mermaid` from the npm install the
check script makes (/tmp/mermaid-node/node_modules, or $ORCH_MERMAID_NODE_MODULES; get them with
`npm install --prefix /tmp/mermaid-node mermaid jsdom`), then takes two screenshots with
headless Chromium (`apt-get install -y chromium`): first_screen.png (1280x900, what a reader
sees before scrolling) and full.png (the whole page, capped in height). It also dumps the
rendered DOM and exits 1 if a Mermaid block did not render (a "Syntax error" diagram, or a
block left as text). Look at the PNGs with any image viewer.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = Path(os.environ.get("ORCH_MERMAID_NODE_MODULES", "/tmp/mermaid-node/node_modules"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>final_report.md</title>
<style>
body {{ font: 16px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1012px; margin: 24px auto; padding: 0 32px; }}
h1, h2 {{ border-bottom: 1px solid #d1d9e0; padding-bottom: .3em; }}
h1 {{ font-size: 2em; }} h2 {{ font-size: 1.5em; margin-top: 24px; }} h3 {{ font-size: 1.25em; }}
code {{ font: 85% ui-monospace, SFMono-Regular, Menlo, monospace; background: #eff1f3;
        padding: .2em .4em; border-radius: 6px; }}
pre {{ background: #f6f8fa; padding: 16px; border-radius: 6px; overflow: auto; }}
pre code {{ background: none; padding: 0; }}
table {{ border-collapse: collapse; display: block; overflow: auto; }}
th, td {{ border: 1px solid #d1d9e0; padding: 6px 13px; }}
tr:nth-child(2n) {{ background: #f6f8fa; }}
pre.mermaid {{ background: none; }}
</style>
<script src="{marked}"></script>
<script src="{mermaid}"></script>
</head><body><div id="content"></div>
<script id="source" type="application/json">{source}</script>
<script>
const text = JSON.parse(document.getElementById('source').textContent);
document.getElementById('content').innerHTML = marked.parse(text, {{ gfm: true }});
for (const code of document.querySelectorAll('pre > code.language-mermaid')) {{
  const pre = code.parentElement;
  pre.className = 'mermaid';
  pre.textContent = code.textContent;
}}
mermaid.initialize({{ startOnLoad: false, securityLevel: 'strict' }});
mermaid.run({{ querySelector: 'pre.mermaid' }}).then(
  () => document.body.setAttribute('data-mermaid', 'done'),
  (e) => document.body.setAttribute('data-mermaid', 'error: ' + e));
</script></body></html>
"""


def demo_run(tasks: int, work: Path) -> Path:
    """A failing run of ``tasks`` fake agents: one root failure deep in a wide DAG, a timeout,
    an allowed failure, a condition_not_met skip, and most tasks skipped behind the root."""
    agent = "tools/fake_agent.py"
    lines = ['goal: "A 200-task run that fails early: find the root failure"', "tasks:"]
    lines += [
        "  - id: setup",
        f"    cmd: [python3, {agent}, inspect]",
        "  - id: call_the_model",
        f"    cmd: [python3, {agent}, fix, --rate-limit]",
        "    depends_on: [setup]",
        "    retries: 1",
        "    retry_backoff_sec: 0.1",
        "  - id: hang",
        "    cmd: [sh, -c, 'echo thinking...; sleep 100']",
        "    timeout_sec: 1",
        "  - id: optional_lint",
        f"    cmd: [python3, {agent}, inspect, --fail-always, --message, 'style nits']",
        "    allow_failure: true",
        "  - id: after_lint",
        f"    cmd: [python3, {agent}, inspect]",
        "    depends_on: [optional_lint]",
        "  - id: notify_on_failure",
        f"    cmd: [python3, {agent}, inspect]",
        "    depends_on: [setup]",
        "    run_when: failure",
    ]
    for i in range(max(tasks - 6, 0)):
        dep = "call_the_model" if i < 10 else f"step_{i % 10:03d}"
        if i % 25 == 24:
            dep = "setup"  # a few independent successes
        lines += [
            f"  - id: step_{i:03d}",
            f"    cmd: [python3, {agent}, build]",
            f"    depends_on: [{dep}]",
        ]
    plan = work / "plan.yaml"
    plan.write_text("\n".join(lines) + "\n", encoding="utf-8")
    home = work / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "orch", "run", str(plan), "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"^run_id: (\S+)", proc.stdout, re.M)
    if not match:
        raise SystemExit(f"the demo run did not start: {proc.stderr[-2000:]}")
    return home / "runs" / match.group(1) / "report" / "final_report.md"


def chromium(args: List[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("chrome")
    if exe is None:
        raise SystemExit("chromium is missing: apt-get install -y chromium")
    profile = tempfile.mkdtemp(prefix="orch-look-chromium-")
    try:
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", help="a final_report.md or a run directory")
    parser.add_argument("--demo", type=int, metavar="N", help="make a failing N-task run first")
    parser.add_argument("--out", type=Path, help="where to write page.html and the PNGs")
    parser.add_argument("--full-height", type=int, default=6000, help="full.png height (px)")
    args = parser.parse_args(argv)
    for name in ("marked/lib/marked.umd.js", "mermaid/dist/mermaid.min.js"):
        if not (NODE_MODULES / name).exists():
            print(
                f"{NODE_MODULES / name} is missing: "
                "npm install --prefix /tmp/mermaid-node mermaid jsdom",
                file=sys.stderr,
            )
            return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="orch-look-report-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.demo:
        report = demo_run(args.demo, Path(tempfile.mkdtemp(prefix="orch-look-demo-")))
    elif args.report:
        report = Path(args.report)
        if report.is_dir():
            report = report / "report" / "final_report.md"
    else:
        parser.error("give a report (or run directory), or --demo N")
    text = report.read_text(encoding="utf-8")
    page = out / "page.html"
    page.write_text(
        PAGE.format(
            marked=(NODE_MODULES / "marked/lib/marked.umd.js").as_uri(),
            mermaid=(NODE_MODULES / "mermaid/dist/mermaid.min.js").as_uri(),
            # Inside <script>: "</" must not close the element early.
            source=json.dumps(text).replace("</", "<\\/"),
        ),
        encoding="utf-8",
    )
    url = page.as_uri()
    budget = "--virtual-time-budget=15000"
    for name, size in (("first_screen.png", "1280,900"), ("full.png", f"1280,{args.full_height}")):
        shot = chromium([budget, f"--window-size={size}", f"--screenshot={out / name}", url])
        if not (out / name).exists():
            print(f"no screenshot {name}: {shot.stderr[-2000:]}", file=sys.stderr)
            return 1
    dom = chromium([budget, "--dump-dom", url]).stdout
    problems = []
    if 'data-mermaid="done"' not in dom:
        state = re.search(r'data-mermaid="([^"]*)"', dom)
        problems.append(
            f"mermaid did not finish: {html.unescape(state.group(1)) if state else '?'}"
        )
    blocks = text.count("```mermaid")
    drawn = dom.count("<svg")
    if "Syntax error" in dom:
        problems.append("a Mermaid block rendered as 'Syntax error'")
    if drawn < blocks:
        problems.append(f"{blocks} Mermaid blocks, {drawn} drawn")
    print(f"report: {report}")
    print(f"page:   {page}")
    print(f"png:    {out / 'first_screen.png'}  {out / 'full.png'}")
    print(f"mermaid blocks: {blocks}, drawn: {drawn}")
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
