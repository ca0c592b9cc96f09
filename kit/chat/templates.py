"""Rendering training text with a chat template, fast where that is safe.

transformers renders every chat template in jinja's sandbox: right for a template that arrives with
a downloaded model, and half of the render time on short conversations (every attribute access is
checked). The templates the kit ships or pins itself — TRL's copies of the official templates, the
family table's own, with the family's declared training patch — are trusted code, so the kit
compiles those once in a plain jinja environment with transformers' settings. Any other template
goes through ``apply_chat_template``. ``kit.chat.render.tokenize_many`` checks the fast rendering against
``apply_chat_template`` on the first rows of every call and falls back to it if they ever differ.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.runtime import new_context

from kit.families import FAMILIES, official_template, training_template


@lru_cache(maxsize=1)
def trusted_templates() -> frozenset[str]:
    import trl

    shipped = {p.read_text(encoding="utf-8") for p in (Path(trl.__file__).parent / "chat_templates").glob("*.jinja")}
    shipped |= {f.template_text for f in FAMILIES.values() if f.template_text}
    for family in FAMILIES.values():
        if family.training_patch and (official := official_template(family)) in shipped:
            shipped.add(official.replace(*family.training_patch))
    return frozenset(shipped)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


class _GenerationBlocks(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}`` (TRL's training templates): the body, as it is.
    transformers' extension also records where such blocks are; rendering text needs only the body."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # As transformers: no HTML escaping, options exposed.
    options = {"ensure_ascii": ensure_ascii, "indent": indent, "separators": separators, "sort_keys": sort_keys}
    if hasattr(x, "marked_json"):  # a field kit.chat.render tracks through the rendering (tool-call arguments, results)
        return x.marked_json(**options)
    return json.dumps(x, **options)


_DICT_ATTRIBUTES = frozenset(dir(dict))
_ABSENT = object()


class _Environment(jinja2.Environment):
    def getattr(self, obj, attribute):
        """``message.role`` on a plain dict: its key, as jinja finds it once ``getattr(obj, "role")``
        has raised AttributeError; without raising and catching that error first (a quarter of the
        rendering time on short conversations). A name dicts have as an attribute (``items``)
        goes the usual way, attribute first."""
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            value = obj.get(attribute, _ABSENT)
            return value if value is not _ABSENT else self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


@lru_cache(maxsize=16)
def _compile(template: str):
    env = _Environment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlocks, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


class TrainingRenderer:
    """``renderer(messages)``: the conversation rendered with the tokenizer's chat template and the
    family's declared patch, as ``apply_chat_template(messages, tokenize=False)`` would."""

    def __init__(self, tokenizer, family, fast: bool = True):
        self.tokenizer = tokenizer
        self.template = training_template(tokenizer, family)
        self.fast = fast and self.template in trusted_templates()
        if self.fast:
            try:
                self._compiled = _compile(self.template)
            except jinja2.exceptions.TemplateError:  # syntax only transformers' environment knows
                self.fast = False
        if self.fast:
            # What ``Template.render`` does, with the template's globals (a ChainMap, slow to
            # copy) merged once: a plain dict under each render's variables.
            self._globals = dict(self._compiled.globals)
            self._context = {**self._globals, **tokenizer.special_tokens_map, "tools": None, "documents": None}

    def __call__(self, messages: list[dict], **kwargs) -> str:
        """``tools``: the conversation's tool definitions, if any (as ``apply_chat_template`` takes them)."""
        kwargs.setdefault("add_generation_prompt", False)
        if self.fast:
            template, environment = self._compiled, self._compiled.environment
            context = new_context(
                environment,
                template.name,
                template.blocks,
                {**self._context, **kwargs, "messages": messages},
                shared=True,
                globals=self._globals,
            )
            try:
                return environment.concat(template.root_render_func(context))
            except Exception:
                environment.handle_exception()
        return self.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=self.template, **kwargs)
