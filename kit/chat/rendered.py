"""A conversation rendered for training: its text, the supervised character spans and, per trained
turn, the texts that must lie inside them. Made by ``kit.chat.render``, turned into token labels by
``kit.chat.labels`` and checked by ``kit.chat.supervision``; it imports none of them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character spans of supervised text
    # Per trained turn: (turn index, the texts that must be supervised: its rendered reasoning, if
    # the template renders it, its answer and each tool call, in rendered order), checked against
    # the tokens' labels.
    expected: list[tuple[int, list[str]]] = None
