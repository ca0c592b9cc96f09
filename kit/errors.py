"""The kit's refusals are one line each: what a user's file, row, field or key holds is quoted into the
message, and a line break in it (a key named "a\\nb", a value with U+2028) would split the line. A
``OneLineError`` writes such breaks as their escapes, whatever its message quotes."""

from __future__ import annotations

# What str.splitlines() splits on: any of these inside a message would make it two lines.
LINE_BREAKS = {c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with every line break written as its escape (``\\n``, ``\\u2028``)."""
    return text.translate(str.maketrans(LINE_BREAKS)) if any(c in text for c in LINE_BREAKS) else text


class OneLineError(ValueError):
    """A refusal: one line, whatever it quotes."""

    def __init__(self, message: object = "", *args):
        super().__init__(one_line(str(message)), *args)
