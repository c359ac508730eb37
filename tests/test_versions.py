"""The tested version ranges: one set of caps in pyproject.toml, hone/versions.py and constraints.txt,
a suite that refuses to pass silently on untested releases, and a one-line warning at run time."""

import os
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hone import versions
from hone.cli import main

ROOT = Path(__file__).resolve().parent.parent
RAISE_CAPS = ("to test and raise the caps on purpose: run `bash scripts/test_newest.sh`; if the suite passes, "
              "raise the caps in pyproject.toml and src/hone/versions.py (TESTED) and regenerate constraints.txt "
              "with `bash scripts/freeze_constraints.sh`; else install the tested set: "
              'pip install torch==2.13.0 -c constraints.txt -e ".[dev]"')


def pyproject_requirements() -> dict[str, Requirement]:
    """hone's requirements, base and dev extra, by canonical package name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {canonicalize_name(req.name): req for req in map(Requirement, lines)}


def constraint_pins() -> dict[str, str]:
    """constraints.txt as {canonical name: pinned version}; every line must be `name==version`."""
    pins = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version.strip(), f"constraints.txt:{number}: {line!r} is not name==version"
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def fake_installed(monkeypatch, installed: dict[str, str]) -> None:
    """Make hone.versions see `installed` ({package: version}) and nothing else."""
    monkeypatch.setattr(versions, "installed_version", installed.get)


# (a) The suite itself: on an untested release it fails (or, under HONE_ALLOW_UNTESTED=1, says why it skips).

def test_installed_libraries_are_in_the_tested_ranges():
    found = versions.untested()
    if found and os.environ.get(versions.ALLOW_ENV, "") not in ("", "0"):
        pytest.skip(f"{versions.ALLOW_ENV} is set; untested: " + " | ".join(found))
    assert found == [], ("the suite is running against releases hone was never tested with:\n  "
                         + "\n  ".join(found) + "\n" + RAISE_CAPS)


# (b) The comparison, on fake versions.

TESTED_NOW = {package: f"{lowest}.0" for package, lowest, _ in versions.TESTED}  # in range, whatever the caps


def test_versions_inside_every_range_are_not_flagged(monkeypatch):
    fake_installed(monkeypatch, TESTED_NOW)
    assert versions.untested() == []


@pytest.mark.parametrize("package, version, word, bound", [
    ("transformers", "5.26.0", "newer", "(<5.26)"),
    ("transformers", "6.0.0", "newer", "(<5.26)"),
    ("peft", "0.22.0", "newer", "(<0.22)"),
    ("trl", "1.17.0rc1", "newer", "(<1.17)"),
    ("torch", "2.14.0+cpu", "newer", "(<2.14)"),
    ("bitsandbytes", "0.51.1", "newer", "(<0.51)"),
    ("transformers", "4.57.3", "older", "(>=5.0)"),
    ("peft", "0.16.0", "older", "(>=0.17)"),
    ("torch", "2.3.1", "older", "(>=2.4)"),
])
def test_a_release_outside_the_range_is_flagged_with_name_version_and_range(monkeypatch, package, version, word,
                                                                             bound):
    fake_installed(monkeypatch, {**TESTED_NOW, package: version})
    (sentence,) = versions.untested()
    assert sentence.startswith(f"{package} {version} is {word} than the versions hone was tested with {bound}")
    assert "pip install -c constraints.txt" in sentence


@pytest.mark.parametrize("package, version", [
    ("transformers", "5.25.9"),       # a newer patch of the newest tested minor
    ("transformers", "5.0.0"),        # exactly the lowest
    ("torch", "2.13.5+cu128"),        # another build of a tested minor
    ("bitsandbytes", "0.48.0.post1"),
])
def test_a_new_patch_of_a_tested_minor_is_not_flagged(monkeypatch, package, version):
    fake_installed(monkeypatch, {**TESTED_NOW, package: version})
    assert versions.untested() == []


def test_a_missing_package_is_ignored(monkeypatch):
    fake_installed(monkeypatch, {"transformers": "5.25.0"})  # no torch, peft, trl, bitsandbytes
    assert versions.untested() == []
    fake_installed(monkeypatch, {"trl": "2.0.0"})
    assert [sentence.split(" is ")[0] for sentence in versions.untested()] == ["trl 2.0.0"]


@pytest.mark.parametrize("without_packaging", [False, True])
def test_major_minor_reads_builds_prereleases_and_odd_strings(monkeypatch, without_packaging):
    if without_packaging:
        monkeypatch.setitem(sys.modules, "packaging.version", None)  # makes the import fail
    assert versions.major_minor("2.13.0+cpu") == (2, 13)
    assert versions.major_minor("5.26.0.dev0") == (5, 26)
    assert versions.major_minor("6") == (6, 0)
    assert versions.major_minor("not-a-version-1.2") == (1, 2)


# (c) One set of caps: pyproject.toml, hone/versions.py and constraints.txt agree.

def test_every_requirement_in_pyproject_has_an_upper_cap():
    uncapped = [str(req) for req in pyproject_requirements().values()
                if not any(spec.operator == "<" for spec in req.specifier)]
    assert uncapped == [], f"pyproject.toml: {uncapped} have no upper cap; cap each at the first untested release"


@pytest.mark.parametrize("package, lowest, first_untested", versions.TESTED)
def test_versions_py_ranges_equal_the_pyproject_caps(package, lowest, first_untested):
    requirement = pyproject_requirements().get(package)
    assert requirement is not None, f"hone/versions.py checks {package}, which pyproject.toml does not require"
    specs = {(spec.operator, spec.version) for spec in requirement.specifier}
    assert specs == {(">=", lowest), ("<", first_untested)}, (
        f"pyproject.toml has {requirement} but src/hone/versions.py TESTED has {package} "
        f">={lowest},<{first_untested}; make them equal")


def test_constraints_pin_every_requirement_inside_its_pyproject_range():
    pins = constraint_pins()
    for name, requirement in pyproject_requirements().items():
        assert name in pins, f"constraints.txt has no pin for {name}; run bash scripts/freeze_constraints.sh"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement}")
    assert "hone" not in pins
    assert pins["torch"] == "2.13.0", "constraints.txt must pin torch==2.13.0 (no +cpu), the wheel the README installs"


def test_constraints_header_names_the_script_that_regenerates_it():
    header = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("#")]
    assert any("scripts/freeze_constraints.sh" in line for line in header)


# (d) The run-time warning: stderr, one line per package, silenced by HONE_ALLOW_UNTESTED=1.

def test_warning_is_one_stderr_line_per_untested_package(monkeypatch, capsys):
    monkeypatch.delenv(versions.ALLOW_ENV, raising=False)
    fake_installed(monkeypatch, {**TESTED_NOW, "transformers": "5.26.0", "peft": "0.16.0"})
    versions.warn_untested()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "hone: warning: transformers 5.26.0 is newer than the versions hone was tested with (<5.26); "
        "if training fails, install the tested set: pip install -c constraints.txt -e .",
        "hone: warning: peft 0.16.0 is older than the versions hone was tested with (>=0.17); "
        "if training fails, install the tested set: pip install -c constraints.txt -e .",
    ]


def test_allow_untested_silences_the_warning(monkeypatch, capsys):
    monkeypatch.setenv(versions.ALLOW_ENV, "1")
    fake_installed(monkeypatch, {**TESTED_NOW, "transformers": "5.26.0"})
    versions.warn_untested()
    assert capsys.readouterr() == ("", "")


def test_the_cli_warns_before_running_a_command(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(versions.ALLOW_ENV, raising=False)
    fake_installed(monkeypatch, {**TESTED_NOW, "torch": "2.14.0"})
    assert main(["check", str(tmp_path / "missing.jsonl")]) != 0  # any quick command will do
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("hone: warning: torch 2.14.0 is newer"), err
    assert sum(line.startswith("hone: warning:") for line in err) == 1, err
