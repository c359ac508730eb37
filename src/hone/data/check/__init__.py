"""The data doctor: every defect that silently ruins a fine-tune, found before training.

`check_files(train, eval, tokenizer, max_length, overlength) -> CheckReport` is the API;
`hone check`, `hone train` and `hone quickstart` call it.
"""

from hone.data.check.report import CheckReport, Finding
from hone.data.check.run import CheckArgs, check_files

__all__ = ["CheckArgs", "CheckReport", "Finding", "check_files"]
