"""Show things in a notebook: HTML in Jupyter, plain text in papermill logs and terminals."""

from __future__ import annotations

import html

from kit.chat.render import IGNORE_INDEX


def show(html_text: str, plain_text: str) -> None:
    """Display a rich and a plain form; Jupyter shows the HTML, logs the plain text."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"text/html": html_text, "text/plain": plain_text}, raw=True)
            return
    except ImportError:
        pass
    print(plain_text)


def label_segments(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Consecutive tokens grouped into (text, supervised) runs."""
    segments: list[tuple[list[int], bool]] = []
    for token_id, label in zip(input_ids, labels):
        supervised = label != IGNORE_INDEX
        if segments and segments[-1][1] == supervised:
            segments[-1][0].append(token_id)
        else:
            segments.append(([token_id], supervised))
    return [(tokenizer.decode(ids), sup) for ids, sup in segments]


def show_labels(tokenizer, example: dict) -> None:
    """A rendered training example with the supervised (trained) tokens highlighted; a preference
    pair (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) as its two sides, each answer highlighted;
    a labelled completion (KTO: ``prompt_ids``, ``completion_ids``, ``label``) with its label; a GRPO
    row (a rendered ``prompt`` and its reference ``answer``) as the prompt, nothing of it trained."""
    if isinstance(example.get("prompt"), str):
        ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        print(
            "GRPO prompt: the model samples answers to it, and the rewards score them (reference answer: "
            f"{example.get('answer')!r}):"
        )
        show_labels(tokenizer, {"input_ids": ids, "labels": [IGNORE_INDEX] * len(ids)})
        return
    if "completion_ids" in example:
        print(f"completion labelled {'desirable' if example['label'] else 'undesirable'}:")
        show_labels(
            tokenizer,
            {
                "input_ids": example["prompt_ids"] + example["completion_ids"],
                "labels": [IGNORE_INDEX] * len(example["prompt_ids"]) + example["completion_ids"],
            },
        )
        return
    if "chosen_ids" in example:
        for side in ("chosen", "rejected"):
            ids = example["prompt_ids"] + example[f"{side}_ids"]
            print(f"{side}:")
            show_labels(
                tokenizer,
                {"input_ids": ids, "labels": [IGNORE_INDEX] * len(example["prompt_ids"]) + example[f"{side}_ids"]},
            )
        return
    segments = label_segments(tokenizer, example["input_ids"], example["labels"])
    parts = []
    for text, supervised in segments:
        escaped = html.escape(text)
        style = "background:#c8f7c5;color:#000" if supervised else "color:#777"
        parts.append(f'<span style="{style}">{escaped}</span>')
    n_sup = sum(1 for label in example["labels"] if label != IGNORE_INDEX)
    legend = (
        f"<p><b>{len(example['input_ids'])} tokens, {n_sup} trained</b> "
        f'(<span style="background:#c8f7c5">green</span> = loss computed; grey = context only)</p>'
    )
    rich = legend + '<pre style="white-space:pre-wrap">' + "".join(parts) + "</pre>"
    plain = f"{len(example['input_ids'])} tokens, {n_sup} trained; trained text is inside [[ ]]:\n" + "".join(
        f"[[{t}]]" if s else t for t, s in segments
    )
    show(rich, plain)


def readable(value) -> str:
    """A value for reading: floats to 4 significant digits, whole numbers without decimals, None as —."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}" if abs(value) >= 10000 else str(int(value))
        return f"{value:,.0f}" if abs(value) >= 10000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def record_lines(record: dict, indent: str = "") -> list[str]:
    """``key: value`` lines, values made readable, nested mappings indented below their key."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines += record_lines(value, indent + "  ")
        else:
            lines.append(f"{indent}{key}: {readable(value)}")
    return lines


def show_record(record: dict, title: str = "") -> None:
    """A flat or nested mapping as readable ``key: value`` lines (not a Python repr)."""
    print("\n".join(([title] if title else []) + record_lines(record, "  " if title else "")))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _html_cell(text: str, limit: int) -> str:
    if len(text) <= limit:
        return html.escape(text)
    return (
        f"<details><summary>{html.escape(_cut(text, limit))}</summary>"
        f"{html.escape(text)}</details>"
    )  # the whole text one click away


def show_table(
    rows: list[dict], columns: list[str], title: str = "", max_chars: int = 160, widths: dict[str, str] | None = None
) -> None:
    """A table that fits the page: long cells cut to ``max_chars`` (the whole text under a click in
    Jupyter), text wrapped, numbers readable. ``widths``: CSS widths of some columns (e.g. {"prompt": "20%"});
    the others share the rest."""
    widths = widths or {}
    cells = [[readable(r.get(c, "")) for c in columns] for r in rows]
    cols = "".join(f'<col style="width:{widths[c]}">' if c in widths else "<col>" for c in columns)
    head = "".join(f'<th style="text-align:left">{html.escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="text-align:left;vertical-align:top;white-space:pre-wrap;'
            f'overflow-wrap:anywhere">{_html_cell(v, max_chars)}</td>'
            for v in row
        )
        + "</tr>"
        for row in cells
    )
    layout = "table-layout:fixed;width:100%" if len(columns) > 3 or widths else ""
    rich = (
        f"<h4>{html.escape(title)}</h4>" if title else ""
    ) + f'<table style="{layout};font-size:0.9em"><colgroup>{cols}</colgroup><tr>{head}</tr>{body}</table>'
    plain_cut = max(24, max_chars // 2)
    plain = (title + "\n" if title else "") + "\n".join(
        [" | ".join(columns)] + [" | ".join(_cut(v.replace("\n", " "), plain_cut) for v in row) for row in cells]
    )
    show(rich, plain)
