"""The one exception type for mistakes a user can make (bad files, bad options, bad data).

The CLI prints its message as one line on stderr and exits with status 2. Anything else that
escapes is a bug in trtcal.
"""

from __future__ import annotations


class TrtcalError(Exception):
    """A user-caused error. The message names the file, line or tensor and what is wrong."""


def where(source: str | None, line: int | None = None) -> str:
    """Format a location prefix such as ``model.cache:12: `` for error messages."""
    if source is None:
        return ""
    return f"{source}:{line}: " if line is not None else f"{source}: "
