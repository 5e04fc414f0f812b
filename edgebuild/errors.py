"""The one error type users see: a single paragraph naming the key or file and the fix."""
from __future__ import annotations


class EdgebuildError(Exception):
    """A user-facing error. `where` is the recipe key or file at fault; `fix` says what to do."""

    exit_code = 2

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        return f"error: {self.where}: {self.problem} Fix: {self.fix}"

    def __reduce__(self):  # picklable across the isolated-step process boundary
        return (type(self), (self.where, self.problem, self.fix))


class GateFailed(EdgebuildError):
    """The accuracy gate rejected the quantized model (exit code 3)."""

    exit_code = 3


class StepFailed(EdgebuildError):
    """A step crashed (not a user error the step itself diagnosed): names the step, its log and the last relevant
    lines of the underlying error (exit code 1)."""

    exit_code = 1

    def __init__(self, where: str, problem: str, fix: str):
        super().__init__(where, problem, fix)
