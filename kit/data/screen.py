"""Rows that are not supervised chat data for a text model, told apart before they are read as such
(``kit.data.rows`` runs these checks on every record, after ``data.columns``):

- a row with images, videos or audio (``images``, ``videos``, ``audios`` ... non-empty, the media its
  ``<image>`` placeholders stand for): a "non-text content" reason, an error under
  ``invalid_rows: error``, a counted drop under ``drop``;
- under ``train.method: sft``, a KTO row labelled undesirable (``label: false``, a boolean, or the text
  "false" in any case): always a counted drop (SFT would teach it as a good answer; ``train.method: kto``
  trains on both); ``label: true`` rows are ordinary SFT rows, and such a ``label`` is read, never
  listed as unused;
- preference data (``chosen``/``rejected`` ...) under ``train.method: sft``: the whole source is refused,
  in one line that names ``train.method: dpo`` and the mapping that trains SFT on the preferred answers.
"""

from __future__ import annotations

import json

from kit.chat.tool_data import FormatError
from kit.data.turns import UnsupportedContent

MEDIA_FIELDS = ("images", "videos", "audios", "image", "video", "audio")
# The preference layouts (their fields), each with how to train SFT on its preferred answers instead.
PREFERENCE_LAYOUTS = (
    (
        ("conversations", "chosen", "rejected"),
        "data.columns: {completion: chosen} is no help here: write each row's "
        "conversations followed by its chosen turn",
    ),
    (
        ("prompt", "chosen", "rejected"),
        "data.columns: {completion: chosen} reads prompt and chosen as prompt_completion",
    ),
    (("chosen", "rejected"), "data.columns: {messages: chosen} reads each chosen conversation as messages"),
    (
        ("question", "response_j", "response_k"),
        "data.columns: {instruction: question, output: response_j} reads the question and the preferred answer as alpaca",
    ),
    (
        ("input", "preferred_output", "non_preferred_output"),
        "write each row as messages: input's messages followed by preferred_output",
    ),
)


class UndesirableAnswer(UnsupportedContent):
    """A KTO row labelled undesirable: not wrong, only not SFT data; dropped and counted."""


def preference_data(record: object) -> str | None:
    """Why a source whose first record is ``record`` is refused (preference data), or None."""
    if not isinstance(record, dict):
        return None
    for fields, instead in PREFERENCE_LAYOUTS:
        if all(f in record for f in fields):
            return (
                f"preference data (fields {', '.join(fields)}) and train.method sft: set train.method: dpo to "
                f"train on the pairs; or, to fine-tune on the preferred answers alone, {instead}"
            )
    return None


def check_record(record: object, labels: bool = False) -> None:
    """Raise for a row with media (FormatError) or, unless ``labels`` (KTO reads them), labelled
    undesirable (UndesirableAnswer)."""
    if not isinstance(record, dict):
        return
    for name in MEDIA_FIELDS:
        media = record.get(name)
        if media not in (None, "", [], {}):
            count = f"{len(media)} item{'s' if len(media) != 1 else ''}" if isinstance(media, list) else "one"
            raise FormatError(
                f"non-text content: {name} has {count}; the kit trains text-only models, "
                "so a row with images, video or audio is not used"
            )
    if not labels and sft_label(record.get("label")) is False:
        raise UndesirableAnswer(
            f"kto label false: label is {json.dumps(record['label'])}: an undesirable answer, which SFT would teach as a "
            "good one; train.method: kto trains on both labels"
        )


def _text_label(value) -> bool | None:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def sft_label(value) -> bool | None:
    """A KTO label as SFT screens it: a boolean, or "true"/"false" in any case (text: a CSV cell, a
    JSON string); None for anything else (a class-id column of numbers is data, not a KTO label)."""
    return value if isinstance(value, bool) else _text_label(value)


def kto_label(value) -> bool:
    """A KTO ``label``: a boolean, "true"/"false" in any case, or 0/1 (a number, or that text); any other
    value is a FormatError (a label read wrongly would train an answer as the opposite of what it is)."""
    found = sft_label(value)
    if found is None and type(value) is int and value in (0, 1):
        found = value == 1
    elif found is None and isinstance(value, str) and value.strip() in ("0", "1"):
        found = value.strip() == "1"
    if found is None:
        raise FormatError(
            f"bad label: label is {type(value).__name__} ({value!r}), expected true (a desirable completion) or "
            'false (an undesirable one): a boolean, "true"/"false" or 0/1'
        )
    return found


def screened_fields(record: object) -> set:
    """The fields of ``record`` this screen reads under SFT (never counted as unused): a KTO label."""
    return {"label"} if isinstance(record, dict) and sft_label(record.get("label")) is not None else set()
