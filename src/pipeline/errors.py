"""The root of every error a user can fix; entry points print its message without a traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """A mistake in data, config or checkpoint; the message names the file, field or value and what was expected."""
