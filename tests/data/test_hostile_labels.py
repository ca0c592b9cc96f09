"""Hostile input, second round: KTO labels written as text or numbers. A label is read as what it says
("true"/"false" in any case, 0/1) or refused in one line; under train.method: sft a "false" label is the
counted drop a boolean false is, and a label is never listed as merely unused."""

import pytest

from kit.data.rows import DataError, load_conversations


def test_kto_labels_as_text_and_numbers_read_as_booleans(tmp_path):
    path = tmp_path / "kto.jsonl"
    path.write_text(
        '{"prompt": "Q", "completion": "A", "label": "true"}\n'
        '{"prompt": "Q", "completion": "B", "label": "FALSE"}\n'
        '{"prompt": "Q", "completion": "C", "label": 0}\n'
        '{"prompt": "Q", "completion": "D", "label": 1}\n'
        '{"prompt": "Q", "completion": "E", "label": " False "}\n'
    )
    rows = load_conversations(str(path), method="kto").rows
    assert [(r["completion"]["content"], r["label"]) for r in rows] == [
        ("A", True),
        ("B", False),
        ("C", False),
        ("D", True),
        ("E", False),
    ]


def test_a_kto_csv_label_column_reads_as_booleans(tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\nQ,A,true\nQ,B,False\nQ,C,0\n")
    rows = load_conversations(str(path), method="kto").rows
    assert [r["label"] for r in rows] == [True, False, False]


@pytest.mark.parametrize("label", ['"yes"', "2", "-1", "0.5", '"tru"'])
def test_any_other_kto_label_is_one_line(tmp_path, label):
    path = tmp_path / "kto.jsonl"
    path.write_text(
        '{"prompt": "Q", "completion": "A", "label": true}\n{"prompt": "Q", "completion": "B", "label": %s}\n' % label
    )
    with pytest.raises(DataError) as e:
        load_conversations(str(path), method="kto")
    value = {'"yes"': "str ('yes')", "2": "int (2)", "-1": "int (-1)", "0.5": "float (0.5)", '"tru"': "str ('tru')"}
    assert str(e.value) == (
        f"{path}: row 2: bad label: label is {value[label]}, expected true (a desirable completion) or false "
        '(an undesirable one): a boolean, "true"/"false" or 0/1'
    )


@pytest.mark.parametrize("false", ['"false"', '"False"', "false"])
def test_under_sft_a_false_label_as_text_is_the_counted_drop_of_a_boolean_false(tmp_path, false):
    path = tmp_path / "kto.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Good"}], "label": "true"}\n'
        '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Bad"}], "label": %s}\n'
        % false
    )
    result = load_conversations(str(path))
    assert [r["messages"][1]["content"] for r in result.rows] == ["Good"]
    assert result.dropped == [
        {
            "source": str(path),
            "row": 2,
            "reason": f"kto label false: label is {false}: an undesirable answer, which SFT would teach as a good "
            "one; train.method: kto trains on both labels",
        }
    ]
    assert "label" not in result.unused_fields  # read (screened), not merely unused


def test_under_sft_a_number_label_is_data_and_listed_unused(tmp_path):
    path = tmp_path / "classes.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "label": 0}\n'
    )
    result = load_conversations(str(path))
    assert len(result.rows) == 1 and result.unused_fields == {"label": 1}
