"""Errors a user can cause and fix; the CLI prints them as one line, no traceback."""


class LabError(Exception):
    """A problem the user can act on (bad input, bad configuration, a failed gate)."""


class DeclarationError(LabError):
    """A source declaration is invalid or its input cannot be found."""


class SchemaMismatchError(LabError):
    """A source file does not carry a column its declaration requires."""


class BadRowsError(LabError):
    """More rows failed validation than the configured threshold allows."""


class DbtError(LabError):
    """dbt ran and reported failures (a failing model or test)."""
