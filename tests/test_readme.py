"""`.ci/run` must run the README's own install and test commands, so CI fails where a user would."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line.strip() for block in blocks[:3] for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_install_and_test_commands_verbatim():
    install, quickstart, test = readme_commands()[:3]
    assert install.startswith("pip install torch==2.13.0")
    assert quickstart.startswith("hone quickstart")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci


def test_install_pins_the_cpu_torch_and_the_package_admits_it():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=2\.\d+,<2\.\d+"', pyproject)
