"""The docs say only what the code does: quoted messages, CLI flags and node inputs.

How to write docs that this test can check (README.md and docs/*.md):

* **Quoted messages.** A message the code prints is quoted in backticks either in the first
  column of a table whose first header cell contains "message" (the troubleshooting tables),
  or anywhere as `` `error: ...` `` (how the CLI prints them). Write ``…`` for the parts that
  vary (a path, a number, a name) or that you leave out; the rest must be the code's text.
  Example values are fine where the code has a placeholder (`mask 2 (of 3) is empty`).
* **CLI flags.** Every ``--flag`` in a ``python -m midi_model …`` / ``python -m bench.<name> …``
  command line belongs to that command; a ``--flag`` in backticks elsewhere must exist in the
  CLI or a bench command. In a usage line's optional part ``[--steps 50 --dtype auto|fp32]``,
  a number is the default, and in ``a|b|c`` the first choice is the default.
* **Node inputs.** In the node table of docs/nodes.md (first column names the node class in
  backticks), every lower-case identifier in backticks in the inputs column is an input of
  that node, and ``name (value …)`` states its default: a number, a backticked string, or the
  first of the choices listed.
"""
from __future__ import annotations

import argparse
import ast
import functools
import re
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_DIRS = [ROOT / "midi_model", ROOT / "nodes"]
ELLIPSIS = ("…", "...")


# ---- quoted messages ---------------------------------------------------------------------------

def _table_rows(text: str):
    """-> [(header cells, row cells)] for every Markdown table row."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(c) <= set("-: ") for c in cells):
            rows.append((header, cells))
    return rows


def quoted_messages(path: Path) -> list[str]:
    text = path.read_text()
    out = []
    for header, cells in _table_rows(text):
        if "message" in header[0].lower():
            out += re.findall(r"`([^`]+)`", cells[0])
    out += [m for m in re.findall(r"`(error: [^`]+)`", text)]
    return out


@functools.lru_cache(maxsize=1)
def code_templates() -> list[list[str]]:
    """Every string literal of the library and the nodes, as its literal pieces (an f-string's
    fields split it: ``f"mask {i} is empty"`` -> ["mask ", " is empty"])."""
    out = []
    for d in CODE_DIRS:
        for f in d.rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.JoinedStr):
                    pieces, cur = [], ""
                    for v in node.values:
                        if isinstance(v, ast.Constant):
                            cur += str(v.value)
                        else:
                            pieces.append(cur)
                            cur = ""
                    out.append(pieces + [cur])
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    out.append([node.value])
    return out


def _alts(strings) -> str:
    return "(?:" + "|".join(re.escape(s) for s in sorted(set(strings), key=len, reverse=True)) + ")"


def fragment_in_template(fragment: str, pieces: list[str], constants=()) -> bool:
    """Is ``fragment`` a substring of some text the template can print? A field prints a value
    without spaces (a number, a name, a path) or one of the code's string ``constants``
    (``f"needs {what}"`` with ``what = "a SAM checkpoint"``); write … for anything else."""
    if any(fragment in p for p in pieces):
        return True
    inner = [c for c in constants if len(c) > 2 and c in fragment]
    field = r"(?:\S+?" + ("|" + _alts(inner) if inner else "") + ")"
    for a in range(len(pieces)):
        for b in range(a + 1, len(pieces)):
            start = _alts(pieces[a][k:] for k in range(len(pieces[a]) + 1))
            end = _alts(pieces[b][:k] for k in range(len(pieces[b]) + 1))
            middle = field.join(re.escape(p) for p in pieces[a + 1:b])
            pattern = start + field + (middle + field if b > a + 1 else "") + end
            if re.fullmatch(pattern, fragment, flags=re.S):
                return True
    return False


def message_in_code(message: str, templates) -> bool:
    """Every part between ellipses is text one template can print, and they come from one template."""
    if message.startswith("error: "):
        message = message[len("error: "):]
    parts = [p.strip() for p in re.split("|".join(map(re.escape, ELLIPSIS)), message)]
    parts = [p for p in parts if p]
    if not parts:
        return True
    words = set(re.findall(r"[A-Za-z_]{4,}", message))
    constants = [t[0] for t in templates if len(t) == 1]
    return any(all(fragment_in_template(p, t, constants) for p in parts) for t in templates
               if words & set(re.findall(r"[A-Za-z_]{4,}", "".join(t))) or not words)


def test_fragment_matching_is_strict():
    t = ["mask ", " (of ", ") is empty: drop it"]
    assert fragment_in_template("mask 2 (of 3) is empty", t)
    assert fragment_in_template("is empty: drop", t)
    assert not fragment_in_template("mask 2 (of 3) is blank", t)
    assert not fragment_in_template("masks 2 (of 3) is empty", t)
    assert message_in_code("mask … (of …) is empty", [t])
    assert not message_in_code("mask … is full", [t])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_messages_exist_in_the_code(doc):
    templates = code_templates()
    missing = [m for m in quoted_messages(doc) if not message_in_code(m, templates)]
    assert not missing, (f"{doc.name} quotes messages the code never prints: {missing}. Quote the code's text, "
                         f"with … for the parts that vary (see the docstring of tests/test_docs.py).")


def test_the_troubleshooting_table_is_checked():
    assert len(quoted_messages(ROOT / "docs" / "nodes.md")) >= 8


# ---- CLI flags -----------------------------------------------------------------------------------

class _Captured(Exception):
    pass


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command builds (``midi_model`` or ``bench.<name>``), captured at parse_args."""
    if command == "midi_model":
        from midi_model.__main__ import _parser

        return _parser()
    import importlib

    mod = importlib.import_module(command)
    seen = []

    def capture(self, *a, **k):
        seen.append(self)
        raise _Captured

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Captured):
            mod.main([])
    return seen[0]


def flags(parser: argparse.ArgumentParser) -> dict:
    """--flag -> its action, sub-commands included."""
    out = {}
    for act in parser._actions:
        if isinstance(act, argparse._SubParsersAction):
            for sub in act.choices.values():
                out.update(flags(sub))
        for opt in act.option_strings:
            if opt.startswith("--"):
                out[opt] = act
    return out


COMMAND = re.compile(r"python3? -m (midi_model|bench\.\w+)(.*?)(?:&&|`|$)")


def doc_commands():
    """-> [(doc, command, text after it)] for every command line in the docs."""
    out = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            for m in COMMAND.finditer(line):
                rest = m.group(2)
                j = i
                while rest.rstrip().endswith("\\") and j + 1 < len(lines):  # continued lines
                    j += 1
                    rest = rest.rstrip()[:-1] + " " + lines[j]
                out.append((doc.name, m.group(1), rest))
    return out


def test_command_lines_use_existing_flags_with_their_defaults(monkeypatch):
    commands = doc_commands()
    assert {c for _, c, _ in commands} >= {"midi_model", "bench.run"}
    problems = []
    for doc, command, rest in commands:
        known = flags(parser_of(command, monkeypatch))
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
            if flag not in known and flag != "--help":
                problems.append(f"{doc}: python -m {command} has no {flag}")
        for optional in re.findall(r"\[([^\]]*)\]", rest):
            for flag, value in re.findall(r"(--[a-z][\w-]*)\s+([^\s\[\]-][^\s\[\]]*)", optional):
                act = known.get(flag)
                if act is None:
                    continue
                if re.fullmatch(r"-?\d+(\.\d+)?", value):
                    if act.default is None:  # resolved later: the help states the effective default
                        if f"({value}" not in (act.help or ""):
                            problems.append(f"{doc}: {flag} {value}, but its help does not say ({value}")
                    elif float(value) != float(act.default):
                        problems.append(f"{doc}: {flag} {value} but the default is {act.default}")
                if "|" in value and value.split("|")[0] != act.default:
                    problems.append(f"{doc}: {flag} {value} lists {value.split('|')[0]} first but the default "
                                    f"is {act.default}")
    assert not problems, problems


def test_flags_in_prose_exist(monkeypatch):
    known = {}
    for command in ("midi_model", "bench.run", "bench.mutation", "bench.official"):
        known.update(flags(parser_of(command, monkeypatch)))
    problems = []
    for doc in DOCS:
        for span in re.findall(r"`([^`]+)`", doc.read_text()):
            if COMMAND.search(span) or not span.startswith("--"):
                continue
            flag = span.split()[0].split("/")[0]
            if flag not in known:
                problems.append(f"{doc.name}: `{span}`")
    assert not problems, f"flags that no command of the pack has: {problems}"


# ---- node inputs -----------------------------------------------------------------------------------

def node_rows():
    from comfyui_midi import nodes

    rows = []
    for header, cells in _table_rows((ROOT / "docs" / "nodes.md").read_text()):
        if header[0].lower().startswith("node") and len(cells) >= 2:
            name = re.search(r"\(`(\w+)`", cells[0])
            if name:
                rows.append((name.group(1), nodes.NODE_CLASS_MAPPINGS[name.group(1)], cells[1]))
    return rows


def _inputs(cls) -> dict:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def stated_defaults(cell: str):
    """``name`` (value …) -> (name, value); ``a``, ``b`` (x / y) -> (a, x), (b, y)."""
    out = []
    for m in re.finditer(r"((?:`[a-z_][a-z0-9_]*`,\s*)*`[a-z_][a-z0-9_]*`)\s*\(([^)]*)\)", cell):
        names = re.findall(r"`([a-z_][a-z0-9_]*)`", m.group(1))
        values = [v.strip() for v in m.group(2).split(" / ")]
        if len(values) != len(names):
            names, values = names[-1:], [m.group(2).strip()]
        out += list(zip(names, values))
    return out


def test_node_table_names_real_inputs_with_their_defaults():
    rows = node_rows()
    assert len(rows) >= 6
    problems = []
    for node, cls, cell in rows:
        inputs = _inputs(cls)
        for name in re.findall(r"`([a-z_][a-z0-9_]*)`", re.sub(r"\([^)]*\)", "", cell)):
            if name not in inputs:
                problems.append(f"{node}: no input {name!r}")
        for name, value in stated_defaults(cell):
            if name not in inputs:
                continue
            kind, opts = inputs[name][0], (inputs[name][1] if len(inputs[name]) > 1 else {})
            default = opts.get("default", kind[0] if isinstance(kind, list) and kind else None)
            first = re.split(r"[\s,=]+", value.replace("`", ""), maxsplit=1)[0]
            if re.fullmatch(r"-?\d+(\.\d+)?", first):
                if default is None or float(first) != float(default):
                    problems.append(f"{node}.{name}: docs say {first}, the default is {default!r}")
            elif value.startswith("`"):
                if first != default:
                    problems.append(f"{node}.{name}: docs say {first}, the default is {default!r}")
            elif isinstance(kind, list) and first in kind and first != default:
                problems.append(f"{node}.{name}: docs list {first} first, the default is {default!r}")
    assert not problems, problems
