"""User-facing errors: one line that says what went wrong, where, and how to fix it."""


class HoneError(Exception):
    """A problem the user can fix. The CLI prints it as one line and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


def where(path, line: int | None = None) -> str:
    """`file:line` for error messages; line numbers are 1-based."""
    return f"{path}:{line}" if line is not None else str(path)
