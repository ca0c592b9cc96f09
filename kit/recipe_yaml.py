"""Recipe YAML read strictly, every failure one ``RecipeError`` line naming the file: a key given twice in
one mapping (YAML keeps the last silently), and aliases that expand a document far past its size (an
alias bomb: a few lines that load as shared objects but run out of memory when copied or dumped)."""

from __future__ import annotations

from pathlib import Path

import yaml

from kit.errors import OneLineError


class RecipeError(OneLineError):
    """A recipe, override or name that cannot be used: one line naming the file and the key."""


# Aliases may expand a document to at most this many times its nodes (or _ALIAS_FLOOR nodes, for a small
# one): a few lines of nested aliases ("billion laughs") otherwise expand to billions of values, which
# load as shared objects but run out of memory when copied or dumped (recipe.yaml).
_ALIAS_FACTOR = 100
_ALIAS_FLOOR = 10_000


def _expanded_size(node: yaml.Node, sizes: dict, open_: set) -> int:
    """The nodes ``node`` stands for with every alias written out (``sizes``: memo by node)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise RecipeError(f"line {node.start_mark.line + 1}: an alias refers to a node that holds it")
    open_.add(id(node))
    children = node.value if isinstance(node, yaml.SequenceNode) else ()
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    size = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    open_.discard(id(node))
    sizes[id(node)] = size
    return size


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently), and a
    document whose aliases expand it more than _ALIAS_FACTOR times (an alias bomb)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            sizes: dict = {}
            expanded = _expanded_size(node, sizes, set())
            if expanded > max(_ALIAS_FLOOR, _ALIAS_FACTOR * len(sizes)):
                raise RecipeError(
                    f"its aliases expand {len(sizes)} nodes to {expanded}, more than {_ALIAS_FACTOR} times "
                    "(an alias bomb?); write the repeated values out"
                )
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise RecipeError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path):
    """A YAML file as data; every failure is one RecipeError naming the file."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
