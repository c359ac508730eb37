"""The README's two commands are what CI runs, and the long form installs what `make` installs,
so CI fails where a user would."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_blocks() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def test_the_two_commands_come_first_and_ci_runs_the_test_command_verbatim():
    blocks = readme_blocks()
    assert blocks[0] == ["make quickstart"] and blocks[1] == ["make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci


def test_make_and_the_long_form_install_the_same_pinned_set():
    install, quickstart, test = readme_blocks()[2]
    assert install == 'pip install torch==2.13.0 -c constraints.txt -e ".[dev]"'
    assert quickstart.startswith("hone quickstart") and test == "python -m pytest -q"
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet " + install.removeprefix("pip install ") in makefile
    assert "-m pytest -q" in makefile and "hone quickstart --out" in makefile


def test_install_pins_the_cpu_torch_and_the_package_admits_it():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=2\.\d+,<2\.\d+"', pyproject)
