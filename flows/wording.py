"""How counts read in what the commands print."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """Say "1 name", "20,074 names": the plural and thousands separators a reader expects."""
    return f"{count:,} {noun if count == 1 else noun + 's'}"
