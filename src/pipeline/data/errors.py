"""Errors a user can cause with data: each message names the file, field or value and what was expected."""

from __future__ import annotations

from pipeline.errors import PipelineError


class DataError(PipelineError):
    """Base class for every data problem the user can fix (bad source, bad file, bad config)."""


class FetchError(DataError):
    """No source delivered a file with the expected checksum."""


class DataFormatError(DataError):
    """A raw file does not have the format its dataset config declares."""


class DataConfigError(DataError):
    """A dataset config is missing a field or holds a value of the wrong kind."""
