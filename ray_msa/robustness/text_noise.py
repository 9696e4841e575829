"""Typing noise on transcripts (MultiBench's text protocol): each word longer than three characters is
perturbed with probability p by one of four edits a typist makes: two adjacent letters swapped, a letter
replaced by a QWERTY neighbour, a letter repeated, a letter dropped. Other words and spacing stay."""

from __future__ import annotations

import re

import numpy as np

QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
EDITS = ("swap", "typo", "repeat", "drop")
WORD = re.compile(r"\S+")


def _neighbours() -> dict[str, str]:
    """Each letter's horizontal and vertical neighbours on a QWERTY keyboard."""
    where = {c: (r, i) for r, row in enumerate(QWERTY_ROWS) for i, c in enumerate(row)}
    out = {}
    for c, (r, i) in where.items():
        near = [(r, i - 1), (r, i + 1), (r - 1, i), (r - 1, i + 1), (r + 1, i - 1), (r + 1, i)]
        out[c] = "".join(QWERTY_ROWS[a][b] for a, b in near if 0 <= a < 3 and 0 <= b < len(QWERTY_ROWS[a]))
    return out


NEIGHBOURS = _neighbours()


def edit_word(word: str, edit: str, rng: np.random.Generator) -> str:
    """`word` with one `edit` at a random letter (the first letter stays, as a reader anchors on it)."""
    letters = [i for i, c in enumerate(word) if c.isalpha()]
    inner = [i for i in letters if i > 0] or letters
    if not inner:
        return word
    i = int(rng.choice(inner))
    if edit == "swap":
        j = i + 1 if i + 1 < len(word) else i - 1
        a, b = sorted((i, j))
        return word[:a] + word[b] + word[a] + word[b + 1 :]
    if edit == "typo":
        near = NEIGHBOURS.get(word[i].lower())
        if not near:
            return word
        key = near[int(rng.integers(len(near)))]
        return word[:i] + (key.upper() if word[i].isupper() else key) + word[i + 1 :]
    if edit == "repeat":
        return word[: i + 1] + word[i:]
    if edit == "drop":
        return word[:i] + word[i + 1 :]
    raise ValueError(f"unknown edit {edit!r}; use one of {', '.join(EDITS)}")


def noisy_text(text: str, p: float, rng: np.random.Generator) -> str:
    """`text` with each word of more than three characters edited with probability p."""

    def one(match: re.Match) -> str:
        word = match.group(0)
        if len(word) <= 3 or rng.random() >= p:
            return word
        return edit_word(word, EDITS[int(rng.integers(len(EDITS)))], rng)

    return WORD.sub(one, text)
