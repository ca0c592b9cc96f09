"""JSON as user files hold it, decoded strictly, every failure one line naming the file and line: a key
given twice in one object, JSON's non-numbers (NaN, Infinity: ``kit.chat.tool_data.loads``), nesting
deeper than Python recurses, and lone surrogate escapes (half of a UTF-16 pair, which no tokenizer
takes). ``kit.data.sources`` reads files through it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kit.chat.tool_data import NotJson, loads
from kit.errors import OneLineError


class DataError(OneLineError):
    """A data file, row or field that cannot be read or trained on: one line naming it."""


class DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    """json's object hook: a key given twice in one object is an error (json keeps the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"key {key!r} is given twice in one object")
        out[key] = value
    return out


def strict_loads(text: str):
    return loads(text, object_pairs_hook=_no_duplicate_keys)


# A JSON escape of a UTF-16 surrogate: paired ones decode to one character, a lone one to a string
# no tokenizer takes (and no UTF-8 file can hold). Only text holding such an escape is searched.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value, where: str = "") -> str | None:
    """The reason ``value`` (a decoded record) holds a lone surrogate, naming its field, or None."""
    stack = [(where, value)]
    while stack:  # iterative: a record may nest deeper than Python recurses
        at, item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return (
                    f"lone surrogate: {at or 'the record'} holds \\u{ord(found.group()):04x} at character "
                    f"{found.start()}, half of a UTF-16 pair and not a character; fix the escape"
                )
        elif isinstance(item, dict):
            stack += [(f"{at}.{k}" if at else str(k), v) for k, v in reversed(item.items())]
        elif isinstance(item, list):
            stack += [(f"{at}[{i}]", v) for i, v in reversed(list(enumerate(item)))]
    return None


def decoded(path: Path, where: str, text: str):
    """One JSON document of ``path`` (``where``: "line N: " or ""), or a DataError in one line."""
    try:
        data = strict_loads(text)
    except json.JSONDecodeError as e:
        if not where:  # a whole JSON file: the line in it
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        raise DataError(f"{path}: {where}invalid JSON: {e.msg}") from None
    except NotJson as e:
        at = where or f"line {_line_of(text, _first_constant(text))}: "
        raise DataError(f"{path}: {at}invalid JSON: {e}") from None
    except DuplicateKey as e:
        raise DataError(f"{path}: {where}{e}; keep one") from None
    except RecursionError:
        at = where or f"line {_line_of(text, _too_deep_at(text))}: "
        raise DataError(f"{path}: {at}nested too deep: more levels of lists and objects than can be read") from None
    return data


def _outside_strings(text: str):
    """(position, character) of each character of JSON ``text`` outside its strings (for errors only)."""
    in_string = escaped = False
    for pos, ch in enumerate(text):
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
        elif ch == '"':
            in_string = True
        else:
            yield pos, ch


def _first_constant(text: str) -> int:
    """Where the first NaN, Infinity or -Infinity outside a string starts (0: not found)."""
    return next((pos for pos, ch in _outside_strings(text) if ch in "NI"), 0)


def _too_deep_at(text: str, limit: int = 900) -> int:
    """Where ``text``'s lists and objects first nest ``limit`` deep (0: never)."""
    depth = 0
    for pos, ch in _outside_strings(text):
        depth += (ch in "[{") - (ch in "]}")
        if depth >= limit:
            return pos
    return 0


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
