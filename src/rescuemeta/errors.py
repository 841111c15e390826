"""Errors that the CLI turns into one-line messages and exit codes (no traceback).

``InputError`` (exit 2) is bad input: a file, row, column, option or spec that cannot be used.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXIT_INPUT", "EXIT_CONVERGENCE", "RescueMetaError", "ConvergenceError", "InputError", "NotEstimable"]

EXIT_INPUT = 2
EXIT_CONVERGENCE = 3


class RescueMetaError(Exception):
    """Base class: ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConvergenceError(RescueMetaError):
    """The sampler did not converge (after one retry with a higher target acceptance); ``diagnostics`` holds
    R-hat, ESS and divergences."""

    exit_code = EXIT_CONVERGENCE

    def __init__(self, message: str, diagnostics: dict):
        self.diagnostics = diagnostics
        super().__init__(message)


class InputError(RescueMetaError):
    """Input that cannot be used, located as precisely as we can.

    Parameters
    ----------
    message : str
        What is wrong, in one sentence.
    file : str or Path, optional
        The file the problem is in.
    row : int, optional
        1-based data row (the first row after the header is row 1).
    line : int, optional
        The row's line number in the file (the header is line 1).
    column : str, optional
        The column name.
    """

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, file: str | Path | None = None, row: int | None = None,
                 line: int | None = None, column: str | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return (": ".join([", ".join(where), self.message]) if where else self.message)


class NotEstimable(InputError, ValueError):
    """The data or the options do not support the requested estimate (e.g. a GLMM on one study, Peto's method for
    a risk ratio). A ValueError too, for callers of the library; the command line reports it as bad input (exit 2).
    Any other ValueError is a bug, and the command line lets its traceback through."""
