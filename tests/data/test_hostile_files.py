"""Hostile input, second round: files. Each test writes the hostile file exactly (bytes where it
matters) and asserts the one line it gives, naming file, line or row, and field."""

import os

import pytest

from kit.data.rows import DataError, load_conversations

USER = '{"role": "user", "content": "Hi"}'
ANSWER = '{"role": "assistant", "content": "Hello"}'
ROW = '{"messages": [%s, %s]}\n' % (USER, ANSWER)


def refusal(path, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        load_conversations(str(path), **kwargs)
    return str(e.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_jsonl_record_holding_nan_is_not_json(tmp_path, constant):
    path = tmp_path / "d.jsonl"
    path.write_text(ROW + '{"messages": [%s, %s], "score": %s}\n' % (USER, ANSWER, constant))
    assert refusal(path) == f"{path}: line 2: invalid JSON: {constant} is not a JSON number"


def test_a_json_file_holding_nan_names_its_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"messages": [%s, %s], "note": "NaN Infinity"},\n{"score": NaN}\n]' % (USER, ANSWER))
    assert refusal(path) == f"{path}: line 3: invalid JSON: NaN is not a JSON number"


def test_a_number_overflowing_to_infinity_is_not_json(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"messages": [%s, %s], "score": 1e999}\n' % (USER, ANSWER))
    assert refusal(path) == (
        f"{path}: line 1: invalid JSON: 1e999 is not a JSON number a program can read (it overflows to infinity)"
    )


def test_csv_cells_are_content_as_written(tmp_path):
    path = tmp_path / "alpaca.csv"
    path.write_text('instruction,output\nColours?,"[""red"", ""white""]"\nWho?,"{""id"": 7}"\nHow many?,2\n')
    rows = load_conversations(str(path)).rows
    assert [r["messages"][1]["content"] for r in rows] == ['["red", "white"]', '{"id": 7}', "2"]


def test_a_csv_messages_column_is_still_json(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_text(
        'messages,id\n"[{""role"": ""user"", ""content"": ""Hi""}, {""role"": ""assistant"", ""content"": ""2""}]",7\n'
    )
    result = load_conversations(str(path))
    assert result.rows[0]["messages"][1] == {"role": "assistant", "content": "2"}
    assert result.unused_fields == {"id": 1}


def test_a_csv_messages_cell_holding_nan_is_one_line(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""Hi"", ""w"": NaN}]"\n')
    assert refusal(path) == (f"{path}: row 1: bad messages: messages is not valid JSON (NaN is not a JSON number)")


def test_nesting_100000_deep_is_one_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(ROW + '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert refusal(path) == f"{path}: line 2: nested too deep: more levels of lists and objects than can be read"


def test_nesting_100000_deep_in_a_json_file_names_a_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[\n" + ROW + ",\n" + "[" * 100_000 + "]" * 100_000 + "\n]")
    assert refusal(path) == f"{path}: line 4: nested too deep: more levels of lists and objects than can be read"


def test_a_lone_surrogate_is_one_line_naming_the_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(ROW + '{"messages": [{"role": "user", "content": "hi \\ud800"}, %s]}\n' % ANSWER)
    assert refusal(path) == (
        f"{path}: row 2: lone surrogate: messages[0].content holds \\ud800 at character 3, half of a UTF-16 "
        "pair and not a character; fix the escape"
    )


def test_a_surrogate_pair_is_one_character(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}, %s]}\n' % ANSWER)
    assert load_conversations(str(path)).rows[0]["messages"][0]["content"] == "hi \U0001f600"


def test_a_lone_surrogate_in_a_json_file_names_row_and_field(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[%s, {"messages": [%s, {"role": "assistant", "content": "\\udfff"}]}]' % (ROW, USER))
    assert refusal(path).startswith(f"{path}: row 2: lone surrogate: messages[1].content holds \\udfff at character 0")


def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    path = tmp_path / "d.jsonl"
    os.mkfifo(path)
    assert refusal(path) == f"{path}: a FIFO (named pipe), not a regular file: reading it would block or never end"


def test_a_fifo_in_a_glob_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text(ROW)
    os.mkfifo(tmp_path / "b.jsonl")
    assert refusal(tmp_path / "*.jsonl") == (
        f"{tmp_path / 'b.jsonl'}: a FIFO (named pipe), not a regular file: reading it would block or never end"
    )


def test_a_symlink_loop_is_said_to_be_one(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    os.symlink(b, a)
    os.symlink(a, b)
    assert refusal(a) == f"{a}: a symlink loop (its links point back at each other), not a file"


def test_a_broken_symlink_names_its_target(tmp_path):
    link = tmp_path / "a.jsonl"
    os.symlink(tmp_path / "gone.jsonl", link)
    assert refusal(link) == f"{link}: a symlink to {tmp_path / 'gone.jsonl'}, which does not exist"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: the permission check cannot fail here")
def test_an_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(ROW)
    path.chmod(0)
    assert refusal(path) == f"{path}: permission denied: the file cannot be read (check its permissions)"


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\u2029"])  # str.splitlines() splits at each
def test_json_lines_split_on_newline_only(tmp_path, separator):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        ('{"messages": [{"role": "user", "content": "a%sb"}, %s]}\r\n' % (separator, ANSWER) + ROW).encode()
    )
    rows = load_conversations(str(path)).rows
    assert [r["messages"][0]["content"] for r in rows] == [f"a{separator}b", "Hi"]


def test_a_latin1_byte_names_line_and_byte_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        ROW.encode() + b'{"messages": [{"role": "user", "content": "caf\xe9"}, ' + ANSWER.encode() + b"]}\n"
    )
    assert refusal(path) == f"{path}: line 2: not UTF-8 text (byte 0xe9 at byte column 47); save the file as UTF-8"


def test_a_latin1_byte_in_a_csv_names_line_and_byte_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"instruction,output\nHi,Hello\nCaf\xe9?,Yes\n")
    assert refusal(path) == f"{path}: line 3: not UTF-8 text (byte 0xe9 at byte column 4); save the file as UTF-8"


def test_a_read_refused_by_permissions_is_one_line_also_as_root(tmp_path, monkeypatch):
    # The test above is skipped as root (root reads any file): here the read fails as it does for a user.
    path = tmp_path / "d.jsonl"
    path.write_text(ROW)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_bytes", denied)
    assert refusal(path) == f"{path}: permission denied: the file cannot be read (check its permissions)"


def test_csv_preference_sides_are_messages_only_where_their_json_is_messages(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(
        'prompt,chosen,rejected\nColours?,"[""red"", ""white""]","[{""role"": ""assistant"", ""content"": ""blue""}]"\n'
    )
    pair = load_conversations(str(path), method="dpo").rows[0]
    assert pair["chosen"] == {"role": "assistant", "content": '["red", "white"]'}
    assert pair["rejected"] == {"role": "assistant", "content": "blue"}


def test_a_csv_prompts_file_reads_its_messages_column(tmp_path):
    from kit.data.prompts import load_prompts

    path = tmp_path / "prompts.csv"
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""[1, 2]""}]"\n')
    assert load_prompts(path)[0].messages == [{"role": "user", "content": "[1, 2]"}]


def test_a_fifo_as_a_prompts_file_is_refused(tmp_path):
    from kit.data.prompts import load_prompts

    path = tmp_path / "prompts.parquet"
    os.mkfifo(path)
    with pytest.raises(DataError) as e:
        load_prompts(path)
    assert str(e.value) == (f"{path}: a FIFO (named pipe), not a regular file: reading it would block or never end")


def test_a_csv_messages_cell_nested_100000_deep_is_one_line(tmp_path):
    path = tmp_path / "messages.csv"
    path.write_text("messages\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    assert refusal(path) == f"{path}: row 1: bad messages: messages is nested too deep to read"


def test_a_latin1_byte_in_a_json_file_names_line_and_byte_column(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"messages": [{"role": "user", "content": "\xff"}]}\n]')
    assert refusal(path) == f"{path}: line 2: not UTF-8 text (byte 0xff at byte column 44); save the file as UTF-8"
