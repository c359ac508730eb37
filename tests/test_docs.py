"""The README and docs/*.md stay honest where a test can tell: every `hone ...` command shown
in a ```bash block parses with hone's own argument parser (nothing is run), and every config
key they name as `section.key`, or list in the README's config table, exists in RunConfig."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shlex
from pathlib import Path

import pytest

from hone.cli import build_parser
from hone.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = {f.name: {k.name for k in dataclasses.fields(f.default_factory)} for f in dataclasses.fields(RunConfig)}
SHELL_BREAKS = {"|", "||", "&&", ";"}  # a command ends at the first of these tokens
REDIRECTS = {">", ">>", "2>", "<"}


def bash_commands(path: Path) -> list[tuple[str, list[str]]]:
    """`(file:line, argv)` for every `hone ...` line of the file's ```bash blocks (comments and
    backslash continuations handled; the argv stops at a pipe or `;` and drops redirections)."""
    text = path.read_text()
    found = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first_line = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).splitlines()
        index = 0
        while index < len(lines):
            start, line = index, lines[index]
            while line.rstrip().endswith("\\") and index + 1 < len(lines):  # a continued command
                index += 1
                line = line.rstrip()[:-1] + " " + lines[index]
            index += 1
            argv = command_words(line)
            if argv and argv[0] == "hone":
                found.append((f"{path.relative_to(ROOT)}:{first_line + start}", argv[1:]))
    return found


def command_words(line: str) -> list[str]:
    """The words of one shell command line, up to the first pipe or separator, redirections dropped."""
    words, skip = [], False
    for word in shlex.split(line, comments=True):
        if not words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word):  # an environment prefix: HONE_KERNELS=0 hone ...
            continue
        if word in SHELL_BREAKS:
            break
        if skip or word in REDIRECTS:
            skip = word in REDIRECTS
            continue
        words.append(word)
    return words


COMMANDS = [command for path in DOCS for command in bash_commands(path)]


def test_the_docs_show_hone_commands():
    assert len(COMMANDS) > 20 and {argv[0] for _, argv in COMMANDS} >= {"train", "check", "compare", "advise", "plan"}


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_documented_command_parses(where, argv):
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `hone {shlex.join(argv)}` does not parse: {errors.getvalue().strip().splitlines()[-1]}")
    assert args.command, f"{where}: `hone {shlex.join(argv)}` names no subcommand"


# `section.key` not inside a longer dotted name or path (`hone.train.loss`, `data/train.jsonl`,
# `corpus/train.txt.gz`), not a call (`model.named_parameters()`) and not a file name (`eval.md`).
KEY = re.compile(r"(?<![\w./-])(model|data|adapter|train|replay|eval)\.([A-Za-z_]\w*)(?![\w/(-]|\.\w)")
FILE_SUFFIXES = {"json", "jsonl", "md", "py", "txt", "gz", "csv", "parquet", "yaml", "yml", "safetensors", "html", "bin", "pt"}


def documented_keys() -> list[tuple[str, str, str]]:
    """`(file:line, section, key)` for every `section.key` the README and docs/*.md mention."""
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in KEY.finditer(line):
                if match.group(2) not in FILE_SUFFIXES:
                    found.append((f"{path.relative_to(ROOT)}:{number}", match.group(1), match.group(2)))
    return found


KEYS = documented_keys()


def test_the_docs_name_config_keys():
    assert len(KEYS) > 20


@pytest.mark.parametrize("where,section,key", KEYS, ids=[f"{w}-{s}.{k}" for w, s, k in KEYS])
def test_every_documented_key_exists(where, section, key):
    assert key in SECTIONS[section], f"{where}: {section}.{key} is not a config key (keys of {section}: {sorted(SECTIONS[section])})"


def readme_config_table() -> dict[str, list[str]]:
    """Section -> the keys its row of the README's config table lists (a key's backticked name
    outside parentheses: inside them are its values and notes)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| section | keys (defaults) |"):].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        section, keys = (cell.strip() for cell in line.strip().strip("|").split("|"))
        previous = None
        while previous != keys:  # strip (nested) parentheses, innermost first
            previous, keys = keys, re.sub(r"\([^()]*\)", "", keys)
        rows[section.strip("`")] = re.findall(r"`([^`]+)`", keys)
    return rows


def test_every_key_of_the_readme_config_table_exists():
    rows = readme_config_table()
    assert set(rows) == set(SECTIONS), "the README's config table should have one row per RunConfig section"
    for section, keys in rows.items():
        assert keys, f"README config table: no keys found in the {section} row"
        unknown = sorted(set(keys) - SECTIONS[section])
        assert not unknown, f"README config table, {section} row: {unknown} are not keys of {section}"
