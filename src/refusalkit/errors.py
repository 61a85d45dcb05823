"""Errors that refusalkit reports to users as one clear line (the CLI exits with code 2)."""

from __future__ import annotations


class RefusalkitError(Exception):
    """Base class for errors caused by user input or configuration, not by bugs."""


class InputError(RefusalkitError):
    """Bad input data: carries the file, line and field it concerns.

    ``str(err)`` gives ``FILE:LINE: field 'F': message`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.field is not None:
            where += f"field '{self.field}': "
        return where + self.message


class ModelSpecError(RefusalkitError):
    """A ``--model`` value that cannot be resolved to a model."""


class UnknownBenchmarkError(RefusalkitError):
    """A benchmark name that is not in the registry."""
