"""Errors the CLI can explain: every one carries the message a person reads and an exit code."""

from __future__ import annotations

from dataclasses import dataclass


class KumiaiError(Exception):
    """An operation failed; the message says what and why. Exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, order=True)
class Problem:
    """One problem with the input: which file, which field, what is wrong and what is allowed."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}"


class InputError(KumiaiError):
    """Bad input. Nothing was changed. Exit code 2."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in the input:\n" + "\n".join(f"  {p}" for p in problems))
