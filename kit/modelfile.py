"""An Ollama Modelfile for an exported GGUF, derived from the same chat template used in training.

The TEMPLATE is found by rendering the model's chat template with placeholder strings, with and
without a system prompt, and putting Ollama's ``{{ .System }}``, ``{{ .Prompt }}`` and
``{{ .Response }}`` where the placeholders landed. ``render_template`` evaluates the small part of
Go's template language this uses, so tests can compare its output with the chat template's.
"""
from __future__ import annotations

import re
from pathlib import Path

from .chat import render_prompt
from .families import Family
from .runs import write_text_atomic

SYSTEM, PROMPT = "\x00SYSTEM\x00", "\x00PROMPT\x00"


class ModelfileError(ValueError):
    pass


def ollama_template(tokenizer, family: Family) -> str:
    with_system = render_prompt(tokenizer, family, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}])
    without = render_prompt(tokenizer, family, [{"role": "user", "content": PROMPT}])
    shared = 0  # the common tail, from where the two renderings agree to the end
    while shared < min(len(with_system), len(without)) and with_system[-1 - shared] == without[-1 - shared]:
        shared += 1
    head_sys, head_plain, tail = with_system[:-shared], without[:-shared], with_system[-shared:]
    if PROMPT not in tail or SYSTEM not in head_sys:
        raise ModelfileError(f"{family.name}: cannot place the system and user text in an Ollama template")
    # Ollama's runner adds BOS itself (the GGUF says so); a literal one in the template would double it.
    bos = tokenizer.bos_token or ""
    if bos and head_sys.startswith(bos) and head_plain.startswith(bos):
        head_sys, head_plain = head_sys[len(bos):], head_plain[len(bos):]
    system_part = head_sys.replace(SYSTEM, "{{ .System }}")
    otherwise = f"{{{{ else }}}}{head_plain}" if head_plain else ""
    template = f"{{{{ if .System }}}}{system_part}{otherwise}{{{{ end }}}}"
    return template + tail.replace(PROMPT, "{{ .Prompt }}") + "{{ .Response }}" + family.end_of_turn


def render_template(template: str, values: dict) -> str:
    """Evaluate ``{{ if .X }}…{{ else }}…{{ end }}`` and ``{{ .X }}`` (no nesting), as Ollama would."""
    def branch(m):
        return m.group(2) if values.get(m.group(1)) else (m.group(4) or "")
    text = re.sub(r"\{\{ if \.(\w+) \}\}(.*?)(\{\{ else \}\}(.*?))?\{\{ end \}\}", branch, template, flags=re.S)
    return re.sub(r"\{\{ \.(\w+) \}\}", lambda m: values.get(m.group(1), ""), text)


def write_modelfile(path: Path, gguf_file: Path, tokenizer, family: Family, system: str | None = None) -> Path:
    template = ollama_template(tokenizer, family)
    if '"""' in template:
        raise ModelfileError(f"{family.name}: the template contains triple quotes")
    lines = [f"FROM ./{gguf_file.name}", f'TEMPLATE """{template}"""']
    if system:
        if '"""' in system:
            raise ModelfileError('export.system: a Modelfile SYSTEM cannot contain triple quotes (""")')
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{token}"' for token in family.stops]
    lines += [f"PARAMETER {key} {value}" for key, value in family.sampling.items()]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_modelfile(path: Path) -> dict:
    """TEMPLATE, SYSTEM and the stop parameters of a Modelfile this module wrote."""
    text = path.read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return {"from": re.search(r"^FROM (.+)$", text, re.M).group(1),
            "template": template.group(1) if template else None, "system": system.group(1) if system else None,
            "stop": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)}


def check(path: Path, tokenizer, family: Family, conversations: list[list[dict]]) -> dict:
    """Does the Modelfile's TEMPLATE give the chat template's prompt for each single-turn
    conversation ([system?, user]; Ollama fills in the Modelfile's SYSTEM where it has none), and
    are its stops the family's end tokens?"""
    parsed = read_modelfile(path)
    bos = tokenizer.bos_token or ""
    same = 0
    for messages in conversations:
        if messages[0]["role"] != "system" and parsed["system"]:
            messages = [{"role": "system", "content": parsed["system"]}, *messages]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        ollama = render_template(parsed["template"], {"System": system, "Prompt": messages[-1]["content"], "Response": ""})
        expected = render_prompt(tokenizer, family, messages) + family.end_of_turn
        same += ollama == expected or (bos and bos + ollama == expected)
    stops_ok = parsed["stop"] == list(family.stops)
    return {"path": str(path), "prompts_checked": len(conversations), "prompts_equal": same,
            "stops_ok": stops_ok, "ok": stops_ok and same == len(conversations)}
