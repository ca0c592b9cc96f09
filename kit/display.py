"""Show things in a notebook: HTML in Jupyter, plain text in papermill logs and terminals."""
from __future__ import annotations

import html

from .chat import IGNORE_INDEX


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
    """A rendered training example with the supervised (trained) tokens highlighted."""
    segments = label_segments(tokenizer, example["input_ids"], example["labels"])
    parts = []
    for text, supervised in segments:
        escaped = html.escape(text)
        style = "background:#c8f7c5;color:#000" if supervised else "color:#777"
        parts.append(f'<span style="{style}">{escaped}</span>')
    n_sup = sum(1 for label in example["labels"] if label != IGNORE_INDEX)
    legend = (f"<p><b>{len(example['input_ids'])} tokens, {n_sup} trained</b> "
              f'(<span style="background:#c8f7c5">green</span> = loss computed; grey = context only)</p>')
    rich = legend + '<pre style="white-space:pre-wrap">' + "".join(parts) + "</pre>"
    plain = (f"{len(example['input_ids'])} tokens, {n_sup} trained; trained text is inside [[ ]]:\n"
             + "".join(f"[[{t}]]" if s else t for t, s in segments))
    show(rich, plain)


def show_table(rows: list[dict], columns: list[str], title: str = "") -> None:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f'<td style="text-align:left">{html.escape(str(r.get(c, "")))}</td>' for c in columns)
                   + "</tr>" for r in rows)
    rich = (f"<h4>{html.escape(title)}</h4>" if title else "") + f"<table><tr>{head}</tr>{body}</table>"
    plain = (title + "\n" if title else "") + "\n".join(" | ".join(str(r.get(c, "")) for c in columns) for r in rows)
    show(rich, plain)
