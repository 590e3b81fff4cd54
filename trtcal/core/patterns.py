"""Selecting tensors by name: an exact name, or a glob (``*``, ``?``, ``[...]``).

Tensor names often contain glob characters themselves (``(Unnamed Layer* 3) [Constant]_output``),
so a pattern always matches a name it equals, whatever characters it holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase


def matches(pattern: str, name: str) -> bool:
    return pattern == name or fnmatchcase(name, pattern)


def select(pattern: str, names: Iterable[str]) -> list[str]:
    """The names (in their order, without repeats) that ``pattern`` matches."""
    return [n for n in dict.fromkeys(names) if matches(pattern, n)]
