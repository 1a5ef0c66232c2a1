"""Shell completion scripts for bash and zsh, generated from orch's argparse parser.

What is completed: command names, each command's options, the values of options and
arguments that have choices (``--stream``, ``--format``, ``completion SHELL``), directories
after an option whose metavar is ``DIR``, and file names where a ``PLAN`` or ``FILE`` goes.
Run ids and task ids are not completed (that would need orch to run on every Tab).

The scripts are built from the parser's actions (argparse's documented ``option_strings``,
``nargs``, ``choices``, ``metavar``), so a new command or option is completed without
editing this module.
"""

from __future__ import annotations

import argparse
import re
from typing import Dict, List, NamedTuple, Sequence, Tuple

from orch import __version__

__all__ = ["bash_script", "zsh_script"]


class _Option(NamedTuple):
    names: Tuple[str, ...]
    takes_value: bool
    kind: str  # "none", "file", "dir", "choice"
    choices: Tuple[str, ...]
    metavar: str
    help: str


class _Positional(NamedTuple):
    metavar: str
    many: bool
    kind: str
    choices: Tuple[str, ...]


class _Command(NamedTuple):
    name: str
    help: str
    options: Tuple[_Option, ...]
    positionals: Tuple[_Positional, ...]


def _kind(action: argparse.Action, metavar: str) -> str:
    if action.choices is not None:
        return "choice"
    words = set(re.split(r"[^A-Z]+", metavar))
    if "DIR" in words:
        return "dir"
    if words & {"PLAN", "FILE", "PATH"}:
        return "file"
    return "none"


def _metavar(action: argparse.Action) -> str:
    metavar = action.metavar
    if isinstance(metavar, tuple):
        metavar = metavar[0] if metavar else None
    return str(metavar) if metavar else action.dest.upper()


def _help(action: argparse.Action) -> str:
    text = action.help if isinstance(action.help, str) and action.help != argparse.SUPPRESS else ""
    text = text.replace("%%", "%")
    return " ".join(text.split())


def _command(name: str, help_text: str, parser: argparse.ArgumentParser) -> _Command:
    options: List[_Option] = []
    positionals: List[_Positional] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        metavar = _metavar(action)
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else ()
        if action.option_strings:
            takes = action.nargs != 0
            kind = _kind(action, metavar) if takes else "none"
            names = tuple(action.option_strings)
            options.append(_Option(names, takes, kind, choices, metavar, _help(action)))
        elif not isinstance(action, argparse._SubParsersAction):
            many = action.nargs in ("*", "+", argparse.REMAINDER)
            positionals.append(_Positional(metavar, many, _kind(action, metavar), choices))
    return _Command(name, help_text, tuple(options), tuple(positionals))


def _commands(parser: argparse.ArgumentParser) -> Tuple[_Command, List[_Command]]:
    """The top level and each command, in the order ``orch --help`` lists them."""
    top = _command("", "", parser)
    commands: List[_Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps: Dict[str, str] = {a.dest: _help(a) for a in action._get_subactions()}
            for name, sub in action.choices.items():
                commands.append(_command(name, helps.get(name, ""), sub))
    return top, commands


# ----------------------------------------------------------------------------- bash


def _words(values: Sequence[str]) -> str:
    return " ".join(values)


def _bash_value_cases(commands: Sequence[_Command]) -> List[str]:
    lines = []
    for command in commands:
        for option in command.options:
            if not option.takes_value:
                continue
            patterns = "|".join(f'"{command.name} {name}"' for name in option.names)
            if option.kind == "choice":
                action = f'COMPREPLY=($(compgen -W "{_words(option.choices)}" -- "$cur"))'
            elif option.kind == "dir":
                action = "_orch_dirs"
            elif option.kind == "file":
                action = "_orch_files"
            else:
                action = ":"  # a value to type: nothing to offer
            lines.append(f"        {patterns}) {action}; return 0 ;;")
    return lines


def _bash_positional_cases(commands: Sequence[_Command]) -> List[str]:
    lines = []
    for command in commands:
        if not command.positionals:
            continue
        # The first positional decides (orch's commands have one; a list repeats it).
        first = command.positionals[0]
        if first.kind == "choice":
            action = f'COMPREPLY=($(compgen -W "{_words(first.choices)}" -- "$cur"))'
        elif first.kind == "file":
            action = "_orch_files"
        elif first.kind == "dir":
            action = "_orch_dirs"
        else:
            continue
        lines.append(f"        {command.name}) {action} ;;")
    return lines


def bash_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion script: ``source <(orch completion bash)``."""
    top, commands = _commands(parser)
    names = [c.name for c in commands]
    top_words = names + [n for o in top.options for n in o.names]
    option_cases = [
        f'        {c.name}) opts="{_words([n for o in c.options for n in o.names])}" ;;'
        for c in commands
    ]
    lines = [
        f"# bash completion for orch {__version__}; generated by `orch completion bash`.",
        "# Use: source <(orch completion bash)",
        "#  or: orch completion bash > ~/.local/share/bash-completion/completions/orch",
        "",
        "_orch_files() {",
        "    local IFS=$'\\n'",
        "    compopt -o filenames 2>/dev/null",
        '    COMPREPLY=($(compgen -f -- "$cur"))',
        "}",
        "",
        "_orch_dirs() {",
        "    local IFS=$'\\n'",
        "    compopt -o filenames 2>/dev/null",
        '    COMPREPLY=($(compgen -d -- "$cur"))',
        "}",
        "",
        "_orch() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" opts="" i',
        "    COMPREPLY=()",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f'            {"|".join(names)}) cmd="${{COMP_WORDS[i]}}"; break ;;',
        "        esac",
        "    done",
        '    if [[ -z "$cmd" ]]; then',
        f'        COMPREPLY=($(compgen -W "{_words(top_words)}" -- "$cur"))',
        "        return 0",
        "    fi",
        '    case "$cmd $prev" in',
        *_bash_value_cases(commands),
        "    esac",
        '    if [[ "$cur" == -* ]]; then',
        '        case "$cmd" in',
        *option_cases,
        "        esac",
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "        return 0",
        "    fi",
        '    case "$cmd" in',
        *_bash_positional_cases(commands),
        "    esac",
        "    return 0",
        "}",
        "",
        "complete -F _orch orch",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- zsh


def _zsh_text(text: str) -> str:
    """Text safe inside a single-quoted _arguments spec or _describe item."""
    text = text.replace("'", "").replace("\\", "/").replace("[", "(").replace("]", ")")
    return text.replace(":", " -").replace("\n", " ")


def _zsh_action(kind: str, choices: Sequence[str]) -> str:
    if kind == "choice":
        return f"({' '.join(choices)})"
    if kind == "dir":
        return "_files -/"
    if kind == "file":
        return "_files"
    return " "


def _zsh_option(option: _Option) -> List[str]:
    help_text = _zsh_text(option.help)
    excl = f"({' '.join(option.names)})" if len(option.names) > 1 else ""
    specs = []
    for name in option.names:
        if option.takes_value:
            sep = "=" if name.startswith("--") else "+"
            action = _zsh_action(option.kind, option.choices)
            value = f":{_zsh_text(option.metavar)}:{action}"
            specs.append(f"'{excl}{name}{sep}[{help_text}]{value}'")
        else:
            specs.append(f"'{excl}{name}[{help_text}]'")
    return specs


def _zsh_command(command: _Command) -> List[str]:
    specs: List[str] = []
    for option in command.options:
        specs.extend(_zsh_option(option))
    for number, positional in enumerate(command.positionals, 1):
        action = _zsh_action(positional.kind, positional.choices)
        where = "*" if positional.many else str(number)
        specs.append(f"'{where}:{_zsh_text(positional.metavar)}:{action}'")
    body = " \\\n            ".join(specs)
    return [
        f"        {command.name})",
        f"          _arguments -s \\\n            {body}" if specs else "          :",
        "          ;;",
    ]


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """A zsh completion script: save it as ``_orch`` in a directory of ``$fpath``, or
    ``source <(orch completion zsh)`` after ``compinit``."""
    top, commands = _commands(parser)
    described = [f"    '{c.name}:{_zsh_text(c.help)}'" for c in commands]
    top_specs: List[str] = []
    for option in top.options:
        top_specs.extend(_zsh_option(option))
    arms: List[str] = []
    for command in commands:
        arms.extend(_zsh_command(command))
    top_args = " \\\n    ".join([*top_specs, "'1: :->command'", "'*:: :->argument'"])
    lines = [
        "#compdef orch",
        f"# zsh completion for orch {__version__}; generated by `orch completion zsh`.",
        '# Use: orch completion zsh > "${fpath[1]}/_orch"   (then start a new shell)',
        "#  or: source <(orch completion zsh)   (after compinit)",
        "",
        "_orch() {",
        "  local curcontext=$curcontext state line ret=1",
        "  local -a commands",
        "  commands=(",
        *described,
        "  )",
        f"  _arguments -C \\\n    {top_args} && return 0",
        "  case $state in",
        "    command)",
        "      _describe -t commands 'orch command' commands && ret=0",
        "      ;;",
        "    argument)",
        "      case $words[1] in",
        *arms,
        "      esac",
        "      ret=0",
        "      ;;",
        "  esac",
        "  return ret",
        "}",
        "",
        "if [[ $funcstack[1] == _orch ]]; then",
        '  _orch "$@"  # autoloaded from $fpath',
        "elif (( $+functions[compdef] )); then",
        "  compdef _orch orch  # sourced",
        "fi",
        "",
    ]
    return "\n".join(lines)
