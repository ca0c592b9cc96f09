"""The part of Go's text/template language that Ollama TEMPLATEs use, evaluated in Python, so that
tests and the export check can render a Modelfile's TEMPLATE as Ollama would and compare it with
the chat template's rendering.

Supported: text with ``{{- … -}}`` trimming, ``{{/* comments */}}``, fields (``.A.B``, ``$.A``,
``$x.A``), variables (``$x := …``, ``$x = …``), ``if`` / ``else if`` / ``else`` / ``range``
(``range $i, $m := …``, with ``else``) / ``with`` / ``end``, string, number and boolean literals,
parenthesized pipelines, ``|`` pipes, and the functions Ollama templates can call: Go's ``and or not
eq ne lt le gt ge len index slice print`` and Ollama's ``json``. Anything else is an error, as a
template Ollama could not run should be.

Values are Python data: dicts are Go maps (a missing key is the zero value, as with Ollama's
``missingkey=zero``), ``Struct`` instances are Go structs (an unknown field is an error), and an
object with ``go_string()`` prints as that (Go's ``String()`` method).
"""

from __future__ import annotations

import json
import re


class GoTemplateError(ValueError):
    pass


class Struct:
    """A Go struct: fixed field names, what ``json.Marshal`` makes of it (``json_value``), and
    whether it has a ``String()`` method (Ollama's tool types print as their JSON)."""

    def __init__(self, type_name: str, fields: dict, json_value=None, stringer: bool = False):
        self.type_name, self.fields, self.json_value, self.stringer = type_name, fields, json_value, stringer

    def field(self, name: str):
        if name not in self.fields:
            raise GoTemplateError(f"can't evaluate field {name} in type {self.type_name}")
        return self.fields[name]

    def go_string(self) -> str | None:
        return go_json(self.json_value) if self.stringer else None


def go_json(value) -> str:
    """Go's ``json.Marshal``: compact, ``<``, ``>`` and ``&`` escaped (HTML-safe), as Ollama's ``json``."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _plain(value):
    """A value as JSON data."""
    if isinstance(value, Struct):
        return value.json_value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def truthy(value) -> bool:
    """Go's truth: false, 0, nil and empty strings, slices and maps are false; structs are true."""
    if isinstance(value, Struct):
        return True
    return bool(value)


def printed(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Struct) and value.go_string() is not None:
        return value.go_string()
    raise GoTemplateError(f"printing a {type(value).__name__} directly (Go would print its internals)")


def _eq(a, *others):
    return any(a == b for b in others)


def _slice(value, start=0, stop=None):
    stop = len(value) if stop is None else stop
    if not 0 <= start <= stop <= len(value):  # Go refuses, where Python would clip
        raise GoTemplateError(f"slice: index out of range [{start}:{stop}] with length {len(value)}")
    return value[start:stop]


FUNCTIONS = {
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "not": lambda a: not truthy(a),
    "len": len,
    "index": lambda v, *keys: _index(v, keys),
    "slice": _slice,
    "print": lambda *args: "".join(printed(a) for a in args),
    "json": lambda v: go_json(_plain(v)),
}


def _index(value, keys):
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else value[key]
    return value


# ---- lexing: text and actions -------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _pieces(template: str) -> list[tuple[str, str]]:
    """[("text", …) | ("action", …)], with the ``-`` trim markers applied to the text around them."""
    out, pos = [], 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(["text", text])
        body = m.group(2).strip()
        if not body.startswith("/*"):
            out.append(["action", body])
        out.append(["trim_next", bool(m.group(3))])
        pos = m.end()
    out.append(["text", template[pos:]])
    pieces, trim = [], False
    for kind, value in out:
        if kind == "trim_next":
            trim = value
        elif kind == "text":
            pieces.append(("text", value.lstrip(" \t\r\n") if trim else value))
            trim = False
        else:
            pieces.append((kind, value))
    return [p for p in pieces if p != ("text", "")]


_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+)|(?P<open>\()|(?P<close>\))'
    r"|(?P<pipe>\|)|(?P<assign>:?=)|(?P<comma>,)|(?P<field>(?:\$\w*)?(?:\.\w+)+|\.|\$\w*)"
    r"|(?P<word>\w+))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"cannot read {text[pos:]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


# ---- parsing: a tree of nodes -------------------------------------------------------------------


class _Parser:
    def __init__(self, template: str):
        self.pieces, self.at = _pieces(template), 0

    def parse(self):
        body, stop = self.block()
        if stop is not None:
            raise GoTemplateError(f"unexpected {{{{ {stop} }}}}")
        return body

    def block(self):
        """Nodes up to an ``else``/``end`` (returned as the second value) or the end."""
        nodes = []
        while self.at < len(self.pieces):
            kind, value = self.pieces[self.at]
            self.at += 1
            if kind == "text":
                nodes.append(("text", value))
                continue
            word = value.split(None, 1)[0] if value else ""
            if word in ("end", "else"):
                return nodes, value
            if word in ("if", "with", "range"):
                nodes.append(self.branch(word, value[len(word) :]))
            else:
                nodes.append(("action", _pipeline(_tokens(value))))
        return nodes, None

    def branch(self, word, rest):
        declare = []
        tokens = _tokens(rest)
        if word == "range" and any(t == "assign" for t, _ in tokens):
            split = next(i for i, (t, _) in enumerate(tokens) if t == "assign")
            declare = [v for t, v in tokens[:split] if t == "field"]
            tokens = tokens[split + 1 :]
        body, stop = self.block()
        otherwise = None
        if stop is None:
            raise GoTemplateError(f"{{{{ {word} }}}} without {{{{ end }}}}")
        if stop.startswith("else"):
            chained = stop[4:].strip()
            if chained.startswith("if ") or chained.startswith("with "):  # else if: a nested branch, sharing the end
                inner = chained.split(None, 1)[0]
                otherwise = [self.branch(inner, chained[len(inner) :])]
            else:
                otherwise, stop = self.block()
                if stop != "end":
                    raise GoTemplateError(f"{{{{ {word} }}}} without {{{{ end }}}}")
        return (word, _pipeline(tokens), declare, body, otherwise)


def _pipeline(tokens):
    """("pipe", declared variable or None, is a declaration, [commands]); a command is a list of operands."""
    variable, declares = None, False
    if len(tokens) > 1 and tokens[0][0] == "field" and tokens[0][1].startswith("$") and tokens[1][0] == "assign":
        variable, declares, tokens = tokens[0][1], tokens[1][1] == ":=", tokens[2:]
    commands, current, depth, group = [], [], 0, []
    for kind, value in tokens:
        if depth:
            if kind == "open":
                depth += 1
            elif kind == "close":
                depth -= 1
                if not depth:
                    current.append(("sub", _pipeline(group)))
                    group = []
                    continue
            group.append((kind, value))
        elif kind == "open":
            depth = 1
        elif kind == "pipe":
            commands.append(current)
            current = []
        elif kind in ("str", "raw", "num", "field", "word"):
            current.append((kind, value))
        else:
            raise GoTemplateError(f"unexpected {value!r}")
    if depth:
        raise GoTemplateError("unclosed parenthesis")
    commands.append(current)
    return ("pipe", variable, declares, commands)


# ---- evaluation ---------------------------------------------------------------------------------


def _get(value, name):
    if isinstance(value, Struct):
        return value.field(name)
    if isinstance(value, dict):
        return value.get(name)
    raise GoTemplateError(f"can't evaluate field {name} in {type(value).__name__}")


class _Scope:
    def __init__(self, data):
        self.frames = [{"$": data}]

    def lookup(self, name):
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise GoTemplateError(f"undefined variable {name}")

    def assign(self, name, value):
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise GoTemplateError(f"undefined variable {name}")


def _operand(token, dot, scope):
    kind, value = token
    if kind == "str":
        return json.loads(value)  # Go's escapes in a quoted string are JSON's, for what templates use
    if kind == "raw":
        return value[1:-1]
    if kind == "num":
        return int(value)
    if kind == "sub":
        return _run_pipe(value, dot, scope)
    if kind == "word":
        if value in ("true", "false"):
            return value == "true"
        if value == "nil":
            return None
        raise GoTemplateError(f"{value} is a function, not a value here")
    if kind == "field":
        head, *names = value.split(".")
        current = dot if head == "" else scope.lookup(head)
        for name in names:
            if name:
                current = _get(current, name)
        return current
    raise GoTemplateError(f"unexpected {value!r}")


def _command(command, dot, scope, piped=()):
    (kind, value), args = command[0], command[1:]
    if kind == "word" and value in ("and", "or"):  # short-circuit: the deciding argument itself
        operands = [lambda t=t: _operand(t, dot, scope) for t in args] + [lambda v=v: v for v in piped]
        result = None
        for get in operands:
            result = get()
            if truthy(result) != (value == "and"):
                return result
        return result
    if kind == "word" and value not in ("true", "false", "nil"):
        if value not in FUNCTIONS:
            raise GoTemplateError(f'function "{value}" not defined')
        return FUNCTIONS[value](*[_operand(t, dot, scope) for t in args], *piped)
    if args or piped:
        raise GoTemplateError(f"{value} is not a function")
    return _operand((kind, value), dot, scope)


def _run_pipe(pipe, dot, scope):
    _, variable, declares, commands = pipe
    result, piped = None, ()
    for command in commands:
        result = _command(command, dot, scope, piped)
        piped = (result,)
    if variable:
        if declares:
            scope.frames[-1][variable] = result
        else:
            scope.assign(variable, result)
    return result


def _execute(nodes, dot, scope, out):
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            result = _run_pipe(node[1], dot, scope)
            if not node[1][1]:  # a declaration or assignment prints nothing
                out.append(printed(result))
        else:
            _branch(node, dot, scope, out)


def _branch(node, dot, scope, out):
    word, pipe, declare, body, otherwise = node
    scope.frames.append({})
    try:
        value = _run_pipe(pipe, dot, scope)
        if word == "range":
            if isinstance(value, dict):
                items = sorted(value.items())  # Go ranges over a map in key order
            elif isinstance(value, (list, tuple, str)) or value is None:
                items = list(enumerate(value or []))
            else:
                raise GoTemplateError(f"range can't iterate over {type(value).__name__}")
            for key, item in items:
                scope.frames.append(dict(zip(declare, (key, item) if len(declare) == 2 else (item,))))
                _execute(body, item, scope, out)
                scope.frames.pop()
            if not items and otherwise:
                _execute(otherwise, dot, scope, out)
        elif truthy(value):
            _execute(body, value if word == "with" else dot, scope, out)
        elif otherwise:
            _execute(otherwise, dot, scope, out)
    finally:
        scope.frames.pop()


def execute(template: str, data) -> str:
    """``template`` executed with ``data`` as dot, as Go's text/template would."""
    out: list[str] = []
    _execute(_Parser(template).parse(), data, _Scope(data), out)
    return "".join(out)


def uses(template: str, name: str) -> bool:
    """Does ``template`` refer to the field ``name`` (``.Messages``, say) anywhere?"""
    return re.search(rf"\.{name}\b", " ".join(v for k, v in _pieces(template) if k == "action")) is not None
