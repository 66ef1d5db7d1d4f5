"""Counts in messages: "1 mask", "2 masks", never "1 masks"."""

from __future__ import annotations


def plural(n: int, noun: str, plural_noun: str | None = None) -> str:
    """``n`` and the noun in the number that agrees with it; ``plural_noun`` for nouns not made with -s."""
    return f"{n} {noun if n == 1 else plural_noun or noun + 's'}"
