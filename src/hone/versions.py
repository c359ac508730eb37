"""Warn when a library hone leans on is a release its test suite never ran against.

transformers, PEFT, TRL, torch and bitsandbytes change behaviour between minor releases,
so a training run on an untested one can fail in ways that look like hone's bugs. The
ranges below are the caps in pyproject.toml (tests/test_versions.py keeps them equal);
constraints.txt pins the exact set the suite last passed with.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata

# (package, lowest tested major.minor, first untested major.minor), as in pyproject.toml.
TESTED: tuple[tuple[str, str, str], ...] = (
    ("transformers", "5.0", "5.26"),
    ("peft", "0.17", "0.22"),
    ("trl", "0.20", "1.17"),
    ("torch", "2.4", "2.14"),
    ("bitsandbytes", "0.48", "0.51"),
)

ALLOW_ENV = "HONE_ALLOW_UNTESTED"
FIX = "if training fails, install the tested set: pip install -c constraints.txt -e ."


def installed_version(package: str) -> str | None:
    """The installed version string of `package`, or None when it is not installed.

    Reads package metadata only: importing torch or transformers to ask costs seconds.
    """
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def major_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a version string: "2.13.0+cpu" -> (2, 13), "5.26.0.dev0" -> (5, 26)."""
    try:
        from packaging.version import Version

        release = Version(version).release
    except (ImportError, ValueError):
        # packaging comes with transformers, but a broken install is when this matters most.
        release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    major, minor = (release + (0, 0))[:2]
    return major, minor


def untested() -> list[str]:
    """One sentence per installed library whose major.minor lies outside its tested range."""
    sentences = []
    for package, lowest, first_untested in TESTED:
        version = installed_version(package)
        if version is None:
            continue
        found = major_minor(version)
        if found >= major_minor(first_untested):
            sentences.append(f"{package} {version} is newer than the versions hone was tested with (<{first_untested}); {FIX}")
        elif found < major_minor(lowest):
            sentences.append(f"{package} {version} is older than the versions hone was tested with (>={lowest}); {FIX}")
    return sentences


def warn_untested() -> None:
    """Print one warning line to stderr per untested library; HONE_ALLOW_UNTESTED=1 silences it."""
    if os.environ.get(ALLOW_ENV, "") not in ("", "0"):
        return
    for sentence in untested():
        print(f"hone: warning: {sentence}", file=sys.stderr)
