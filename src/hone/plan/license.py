"""A model's license, read from its model card (README.md front matter) or config, and flagged
when it may not allow the intended use: non-commercial, research-only, custom terms or unknown."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

PERMISSIVE = {"apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "openrail", "bigscience-openrail-m",
              "openrail++", "creativeml-openrail-m", "cc0-1.0", "unlicense", "isc", "mpl-2.0", "bsl-1.0", "gpl-3.0", "lgpl-3.0"}
RESTRICTED = ("-nc", "noncommercial", "non-commercial", "research", "academic", "gated")
CUSTOM = ("llama", "gemma", "qwen", "deepseek", "other", "custom")


@dataclass
class LicenseInfo:
    name: str
    flag: str
    """`ok` (permissive), `check` (custom terms: read them), `restricted` (non-commercial or
    research-only) or `unknown` (no license found)."""
    detail: str

    def line(self) -> str:
        marks = {"ok": "", "check": " ⚠ custom terms: read them before commercial use",
                 "restricted": " ⚠ non-commercial / research-only: not for commercial use",
                 "unknown": " ⚠ no license found: you may not be allowed to use or share this model"}
        return f"{self.name}{marks[self.flag]} ({self.detail})"


def classify(name: str) -> str:
    key = name.strip().lower()
    if any(mark in key for mark in RESTRICTED):
        return "restricted"
    if key in PERMISSIVE:
        return "ok"
    if any(mark in key for mark in CUSTOM):
        return "check"
    return "unknown" if key in ("", "unknown", "none") else "check"


def read_license(folder: str) -> LicenseInfo:
    """License of a local model folder (or hub id, by its cached card when present)."""
    local = Path(folder)
    card = local / "README.md"
    if card.is_file():
        match = re.search(r"^---\s*\n(.*?)\n---", card.read_text(errors="replace"), re.S)
        if match:
            found = re.search(r"^license:\s*['\"]?([^'\"\n]+)", match.group(1), re.M)
            if found:
                name = found.group(1).strip()
                return LicenseInfo(name, classify(name), f"{card} front matter")
    config = local / "config.json"
    if config.is_file():
        name = json.loads(config.read_text()).get("license")
        if isinstance(name, str) and name:
            return LicenseInfo(name, classify(name), f"{config}")
    if not local.exists():
        return LicenseInfo("unknown", "unknown", f"{folder} is a hub id: read its model card")
    return LicenseInfo("unknown", "unknown", f"no license in {folder}/README.md or config.json")
