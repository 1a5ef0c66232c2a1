"""CLI polish: did-you-mean, options anywhere, Examples in every --help, NO_COLOR,
`python3 -m orch.cli`, and the bash/zsh completion scripts."""

from __future__ import annotations

import argparse
import io
import os
import pty
import re
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
from conftest import PYTHON, REPO, Orch, orch_env, run_id_of

from orch import cli


def _in_process(*argv: str) -> Tuple[int, str, str]:
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse's own exits (--help, usage errors)
            code = int(exc.code or 0)
    out.flush()
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    return code, buffer.getvalue().decode(), err.getvalue()


def _commands() -> Dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no commands")


# --- did-you-mean -------------------------------------------------------------------------


def test_mistyped_command_gets_a_suggestion(orch: Orch) -> None:
    proc = orch.run("rnu", "plan.yaml")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "orch: error: argument COMMAND: invalid choice: 'rnu' (did you mean 'run'?)"
    )
    code, _, err = _in_process("zzzzzz")
    assert code == 2 and "invalid choice: 'zzzzzz' (choose from run, resume, " in err


def test_mistyped_option_is_named_not_the_plan(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    proc = orch.run("run", "--max-paralel", "2", plan)
    assert proc.returncode == 2
    last = proc.stderr.splitlines()[-1]
    assert (
        last == "orch: error: unrecognized option '--max-paralel' (did you mean '--max-parallel'?)"
    )
    assert "plan.yaml" not in last
    assert not (orch.home / "runs").exists()  # nothing ran
    for argv, expected in [
        (["run", plan, "--max-paralel=2"], "'--max-paralel' (did you mean '--max-parallel'?)"),
        (["status", "last", "--jsno"], "'--jsno' (did you mean '--json'?)"),
        (["logs", "last", "--folow"], "'--folow' (did you mean '--follow'?)"),
        (["list", "-x"], "unrecognized option '-x'"),
    ]:
        code, _, err = _in_process(*argv)
        assert code == 2 and expected in err, (argv, err)


def test_mistyped_choice_gets_a_suggestion() -> None:
    code, _, err = _in_process("logs", "last", "--stream", "stdot")
    assert code == 2
    assert err.splitlines()[-1] == (
        "orch: error: argument --stream: invalid choice: 'stdot' (did you mean 'stdout'?)"
    )


def test_abbreviations_and_negative_numbers_still_reach_argparse() -> None:
    code, _, err = _in_process("logs", "20260101_000000_abcdef", "--tail", "-1")
    assert code == 2 and "--tail: expected a whole number >= 0, got '-1'" in err
    code, _, err = _in_process("run", "--max", "2", "--dry", "missing.yaml")
    assert code == 2 and "missing.yaml" in err and "unrecognized" not in err


# --- options anywhere ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "{plan}", "--max-parallel", "1", "--home", "{home}"],
        ["run", "--max-parallel", "1", "{plan}", "--home", "{home}"],
        ["--home", "{home}", "run", "{plan}", "--max-parallel", "1"],
        ["--home={home}", "run", "--fail-fast", "{plan}"],
    ],
    ids=["options-last", "options-first", "home-before-command", "equals-form"],
)
def test_options_anywhere_on_the_line(orch: Orch, argv: List[str]) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    words = [w.format(plan=plan, home=orch.home) for w in argv]
    proc = subprocess.run(
        [PYTHON, "-m", "orch", *words],
        cwd=str(orch.workdir),
        env=orch_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_of(proc.stdout)
    assert orch.state(run_id)["max_parallel"] == (1 if "--max-parallel" in words else 4)


def test_options_before_positionals_in_every_reader(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["sh", "-c", "echo hi"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    home = str(orch.home)
    assert _in_process("status", "--json", "--home", home, run_id)[0] == 0
    code, out, err = _in_process(
        "logs", "--task", "a", "--home", home, "--stream", "stdout", "last"
    )
    assert code == 0, err
    assert out == "hi\n"
    assert _in_process("--home", home, "graph", "--format", "dot", run_id)[0] == 0
    # A value that looks like a command is still the option's value.
    code, _, err = _in_process("--home", "run", "list")
    assert code == 0, err


# --- help ---------------------------------------------------------------------------------


def test_every_command_help_has_examples_that_parse() -> None:
    commands = _commands()
    assert {"run", "resume", "cancel", "status", "logs", "list", "validate", "graph"} <= set(
        commands
    )
    for name, parser in commands.items():
        text = parser.format_help()
        assert "\nExamples:\n  orch " in text or "\nExamples:\n  source " in text, name
        examples = text.split("\nExamples:\n", 1)[1].splitlines()
        for line in examples:
            words = re.split(r"[|#>]", line)[0].split()
            if words[:1] != ["orch"]:
                continue
            # Every example is a command line orch's parser accepts.
            try:
                args = cli.build_parser().parse_args(words[1:])
            except SystemExit as exc:
                raise AssertionError(f"{name}: example does not parse: {line}") from exc
            assert args.command == name, line
    top = cli.build_parser().format_help()
    assert "Examples:\n  orch run plan.yaml\n" in top
    assert "'last': the newest run" in top


def test_logs_help_documents_the_header_format() -> None:
    text = _commands()["logs"].format_help()
    assert "  ==> task build attempt 2/3 stdout <==\n" in text
    assert "  ==> task build attempt 2/3: exit 1 after 2.3s <==\n" in text
    assert "'TASK_ID | '" in text


# --- NO_COLOR -----------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("value", "color"), [(None, True), ("", True), ("1", False), ("0", False)])
def test_no_color_only_when_set_and_not_empty(
    monkeypatch: pytest.MonkeyPatch, value: str, color: bool
) -> None:
    monkeypatch.setenv("TERM", "xterm")
    if value is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", value)
    assert cli._color(_Tty()) is color
    assert cli._color(io.StringIO()) is False  # never on a pipe


def _status_on_a_terminal(orch: Orch, run_id: str, no_color: str) -> bytes:
    leader, follower = pty.openpty()
    env = orch_env({"NO_COLOR": no_color, "TERM": "xterm"})
    proc = subprocess.Popen(
        [PYTHON, "-m", "orch", "status", run_id, "--home", str(orch.home)],
        cwd=str(orch.workdir),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks)


def test_empty_no_color_keeps_colour_in_status(orch: Orch) -> None:
    plan = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n')
    run_id = run_id_of(orch.run("run", plan).stdout)
    assert b"\x1b[" in _status_on_a_terminal(orch, run_id, "")
    assert b"\x1b[" not in _status_on_a_terminal(orch, run_id, "1")


# --- python3 -m orch.cli ------------------------------------------------------------------


def _module_cli(orch: Orch, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "orch.cli", *args],
        cwd=str(orch.workdir),
        env=orch_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_orch_cli_works_like_python_m_orch(orch: Orch) -> None:
    good = orch.plan('tasks:\n  - id: a\n    cmd: ["true"]\n', name="good.yaml")
    bad = orch.plan('tasks:\n  - id: a\n    cmd: ["false"]\n', name="bad.yaml")
    invalid = orch.plan("tasks: []\n", name="invalid.yaml")
    home = ["--home", str(orch.home)]
    ok = _module_cli(orch, "run", good, *home)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("run_id: ")
    assert _module_cli(orch, "run", bad, *home).returncode == 3
    assert _module_cli(orch, "run", invalid, *home).returncode == 2
    assert _module_cli(orch, "status", "last", *home).returncode == 0
    assert _module_cli(orch).returncode == 2  # no command: help on stderr, as `python -m orch`
    assert "RuntimeWarning" not in ok.stderr


# --- completion ---------------------------------------------------------------------------


def _script(shell: str) -> str:
    code, out, err = _in_process("completion", shell)
    assert code == 0, err
    return out


def test_bash_completion_script_is_valid_and_completes(tmp_path: Path) -> None:
    script = tmp_path / "orch.bash"
    script.write_text(_script("bash"))
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    (tmp_path / "plan.yaml").write_text("")
    (tmp_path / "somedir").mkdir()
    probe = f"""
source {script}
t() {{
    COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _orch; echo "${{COMPREPLY[*]}}"
}}
t orch ru
t orch run --max-p
t orch logs last --stream ''
t orch run pla
t orch run --home some
t orch completion ''
t orch --home h status --j
t orch graph x --format ''
"""
    proc = subprocess.run(
        ["bash", "-c", probe], cwd=str(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "run",
        "--max-parallel",
        "stdout stderr both",
        "plan.yaml",
        "somedir",
        "bash zsh",
        "--json",
        "mermaid dot",
    ]


def test_completion_covers_every_command_and_option() -> None:
    bash, zsh = _script("bash"), _script("zsh")
    for name, parser in _commands().items():
        assert f"'{name}:" in zsh, name
        for option in parser._option_string_actions:
            assert option in bash and option in zsh, (name, option)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_script_parses(tmp_path: Path) -> None:
    script = tmp_path / "_orch"
    script.write_text(_script("zsh"))
    assert subprocess.run(["zsh", "-n", str(script)], capture_output=True).returncode == 0


# Types a line and Tab in an interactive zsh (zpty) with the script in $fpath, recording every
# candidate compadd is given.
_ZPTY = """
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PROMPT=">"; fpath=("$1" $fpath); autoload -Uz compinit; compinit -u -D'
zpty -w z 'compadd () { builtin compadd -O h "$@"; print -rl -- $h >>"$2"; builtin compadd "$@" }'
zpty -w -n z "$3"$'\\t'
for i in {1..100}; do [[ -s "$2" ]] && break; sleep 0.1; done
sleep 0.3
zpty -d z
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("orch ru", {"run"}),
        ("orch logs last --stream ", {"stdout", "stderr", "both"}),
        ("orch run --max-p", {"--max-parallel"}),
        ("orch run pla", {"plan.yaml"}),
    ],
)
def test_zsh_completion_completes(tmp_path: Path, line: str, expected: Set[str]) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_orch").write_text(_script("zsh"))
    (tmp_path / "plan.yaml").write_text("")
    hits = tmp_path / "hits"
    script = _ZPTY.replace("$1", str(functions)).replace("$2", str(hits)).replace("$3", line)
    subprocess.run(["zsh", "-f", "-c", script], cwd=str(tmp_path), timeout=60, check=False)
    got = set(hits.read_text().split()) if hits.exists() else set()
    assert got == expected


def test_zsh_script_shape() -> None:
    zsh = _script("zsh")
    assert zsh.startswith("#compdef orch\n")
    assert "'1:PLAN:_files'" in zsh  # PLAN completes file names
    assert "--stream=[" in zsh and ":(stdout stderr both)'" in zsh
    assert "compdef _orch orch" in zsh
    # Every single-quoted word is closed on its line (no quote in a help text breaks it).
    assert all(line.count("'") % 2 == 0 for line in zsh.splitlines()), zsh


def test_unknown_shell_is_refused() -> None:
    code, out, err = _in_process("completion", "fish")
    assert code == 2 and out == ""
    assert "invalid choice: 'fish'" in err


def test_repo_is_the_checkout() -> None:
    assert (REPO / "orch" / "cli.py").is_file()
