"""Hostile input, second round: turns and tool calls. Each test writes the hostile file exactly and
asserts the one line it gives (file, row, field), or the counted drop under invalid_rows: drop."""

import pytest

from kit.data.rows import DataError, load_conversations

USER = '{"role": "user", "content": "Hi"}'
ANSWER = '{"role": "assistant", "content": "Hello"}'


def refusal(path, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        load_conversations(str(path), **kwargs)
    return str(e.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_tool_call_arguments_holding_nan_or_infinity_are_not_json(tmp_path, constant):
    call = (
        '{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": '
        '{"name": "f", "arguments": "{\\"value\\": %s}"}}]}' % constant
    )
    path = tmp_path / "calls.jsonl"
    path.write_text('{"messages": [%s, %s, {"role": "tool", "content": "1"}, %s]}\n' % (USER, call, ANSWER))
    assert refusal(path) == (
        f"{path}: row 1: bad arguments: messages[1].tool_calls[0].function.arguments is not valid JSON "
        f"({constant} is not a JSON number)"
    )


def test_a_sharegpt_function_call_value_holding_nan_is_not_json(tmp_path):
    path = tmp_path / "sharegpt.jsonl"
    path.write_text(
        '{"conversations": [{"from": "human", "value": "Hi"}, '
        '{"from": "function_call", "value": "{\\"name\\": \\"f\\", \\"arguments\\": {\\"v\\": NaN}}"}, '
        '{"from": "observation", "value": "1"}, {"from": "gpt", "value": "Done"}]}\n'
    )
    assert refusal(path) == (
        f"{path}: row 1: bad tool call: conversations[1].value is not valid JSON (NaN is not a JSON number)"
    )


def test_two_reasoning_fields_that_differ_are_refused(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_text(
        '{"messages": [%s, {"role": "assistant", "content": "Hello", "reasoning_content": "a", "thinking": "b"}]}\n'
        % USER
    )
    assert refusal(path) == (
        f"{path}: row 1: two reasoning fields: messages[1] has reasoning_content and thinking, which differ; keep one"
    )


def test_two_reasoning_fields_that_agree_are_one(tmp_path):
    path = tmp_path / "two.jsonl"
    path.write_text(
        '{"messages": [%s, {"role": "assistant", "content": "Hello", "reasoning_content": "a", "thinking": "a"}]}\n'
        % USER
    )
    assert load_conversations(str(path)).rows[0]["messages"][1] == {
        "role": "assistant",
        "content": "Hello",
        "reasoning": "a",
    }


def test_malformed_content_parts_are_an_error_not_a_media_drop(tmp_path):
    path = tmp_path / "parts.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": [1, 2]}, %s]}\n{"messages": [%s, %s]}\n' % (ANSWER, USER, ANSWER)
    )
    reason = "bad content: messages[0].content[0] is int, expected text or a text part"
    assert refusal(path) == f"{path}: row 1: {reason}"
    result = load_conversations(str(path), invalid_rows="drop")
    assert result.dropped == [{"source": str(path), "row": 1, "reason": reason}]
    assert len(result.rows) == 1


def test_an_unknown_part_type_is_an_error_and_a_real_media_part_still_a_drop(tmp_path):
    path = tmp_path / "parts.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": [{"type": "txt", "text": "Hi"}]}, %s]}\n' % ANSWER
        + '{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}]}, %s]}\n'
        % ANSWER
        + '{"messages": [%s, %s]}\n' % (USER, ANSWER)
    )
    assert refusal(path) == (
        f"{path}: row 1: bad content: messages[0].content[0].type is 'txt', expected a text part (or a media "
        "part: image, image_url, video, video_url, audio, audio_url, input_audio, file)"
    )
    result = load_conversations(str(path), invalid_rows="drop")
    assert [d["reason"] for d in result.dropped] == [
        "bad content: messages[0].content[0].type is 'txt', expected a text part (or a media part: image, "
        "image_url, video, video_url, audio, audio_url, input_audio, file)",
        "non-text content: messages[0].content[0] is image_url",
    ]


def test_parquet_arguments_holding_nan_are_refused(tmp_path):
    import pyarrow
    import pyarrow.parquet

    path = tmp_path / "calls.parquet"
    call = {"type": "function", "function": {"name": "f", "arguments": {"value": float("nan")}}}
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "1"},
        {"role": "assistant", "content": "Hello"},
    ]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist([{"messages": messages}]), path)
    assert refusal(path) == (
        f"{path}: row 1: bad arguments: messages[1].tool_calls[0].function.arguments holds NaN or an infinity, "
        "which JSON has no number for"
    )


def test_a_hermes_block_read_as_a_python_literal_may_not_overflow_to_infinity(tmp_path):
    path = tmp_path / "hermes.jsonl"
    path.write_text(
        '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": '
        "\"<tool_call>{'name': 'f', 'arguments': {'v': 1e999}}</tool_call>\"}, "
        '{"from": "tool", "value": "1"}, {"from": "gpt", "value": "Done"}]}\n'
    )
    assert refusal(path) == (
        f"{path}: row 1: bad arguments: conversations[1].value: <tool_call> block 1.arguments holds NaN or an "
        "infinity, which JSON has no number for"
    )
