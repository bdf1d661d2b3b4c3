"""The README's examples are what the tool prints.

Every fenced example that starts with ``$ smm-hotplug …`` (also one indented inside a list item)
is run as printed (in a scratch directory, so that the trace files it saves land there), and every
line quoted under it must appear in what the command prints, in that order.  ``...`` on a line
of its own stands for lines left out; a line ending in ``...`` for the rest of that line.  Times
(``1.86 s``) depend on the machine and are compared as "some time"; everything else must match
exactly.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from conftest import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"
# Examples too long for the test suite: the whole design × adversary report takes minutes, the
# proof of `all` on the smallest hot-add about a minute; the history catalog (matrix --history, and
# the report that runs it) is tests/test_history.py's.
TOO_LONG = {
    "smm-hotplug report -o report.html",
    "smm-hotplug check --attack all --budget os-ipi=1 --boot-cpus 1 --max-cpus 2 --plug 1 --unplug 0",
    "smm-hotplug matrix --history",
    "smm-hotplug report --design sdm --design smram-default-smbase --attack none "
    "--attack os-code-at-default-smbase -o report.html",
}
TIME = re.compile(r"\b\d+(\.\d+)? s\b")


def examples() -> list[tuple[str, list[str]]]:
    """(command line, quoted lines) of every `$ smm-hotplug` example, in README order."""
    out: list[tuple[str, list[str]]] = []
    current: list[str] | None = None  # the quoted lines of the example being read
    indent = 0  # of the example's fence (an example inside a list item is indented)
    for line in README.read_text().splitlines():
        if line.lstrip().startswith("```"):
            current = None  # a fence opens or closes a block: no example is being read
            continue
        if line.lstrip().startswith("$ smm-hotplug "):
            indent = len(line) - len(line.lstrip())
            current = []
            out.append((line.lstrip()[2:].split("  #")[0].strip(), current))
        elif current is not None and line.strip():
            current.append(line[indent:])
    return out


def _normal(line: str) -> str:
    return TIME.sub("<time> s", line.rstrip())


def _matches(quoted: str, printed: str) -> bool:
    quoted = _normal(quoted)
    if quoted.endswith("..."):
        return _normal(printed).startswith(quoted[:-3])
    return _normal(printed) == quoted


EXAMPLES = [(cmd, lines) for cmd, lines in examples() if cmd not in TOO_LONG]


def test_the_readme_has_examples_to_check():
    commands = [cmd for cmd, _ in EXAMPLES]
    assert "smm-hotplug simulate" in commands and "smm-hotplug simulate --replay attack.json" in commands
    assert len(commands) >= 7


def _mismatch(command: str, quoted: list[str], printed: list[str]) -> str | None:
    at = 0
    for line in quoted:
        if line.strip() == "...":
            continue
        found = next((i for i in range(at, len(printed)) if _matches(line, printed[i])), None)
        if found is None:
            shown = "\n".join(printed[at : at + 30])
            return f"$ {command}\nthe README quotes:\n{line}\nbut from line {at} on it printed:\n{shown}"
        at = found + 1
    return None


def test_the_readme_examples_print_what_the_readme_quotes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trace files the examples save and then replay land here
    problems = []
    for command, quoted in EXAMPLES:  # in README order: a replay follows the check that saved it
        res = run_cli(*shlex.split(command)[1:])
        assert "Traceback" not in res.stderr, res.stderr
        problem = _mismatch(command, quoted, (res.stdout + res.stderr).splitlines())
        if problem is not None:
            problems.append(problem)
    assert not problems, "\n\n".join(problems)
