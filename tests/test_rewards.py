"""GRPO's reward functions (kit.rewards), called as TRL's GRPOTrainer calls them: the built-in checks on
real completions (chat messages, and Qwen3's tool-call markup parsed by the kit's parser), a user's
module:function, and every way an entry or a function's result is refused in one line."""

import textwrap

import pytest

from kit.families import get_family
import json

from kit.rewards import RewardError, check_entry, mean_rewards, reward_functions

TRL_EXTRAS = {"completion_ids": None, "trainer_state": None, "log_extra": None, "log_metric": None}


def as_chat(texts):
    """Completions as TRL passes them for chat prompts: each a list holding the assistant's message."""
    return [[{"role": "assistant", "content": t}] for t in texts]


def rewards(entry, texts, **row):
    [function], [weight] = reward_functions([entry], get_family("qwen3"))
    prompts = [[{"role": "user", "content": "q"}]] * len(texts)
    return function(prompts=prompts, completions=as_chat(texts), **TRL_EXTRAS, **row), weight


def test_format_wants_the_tag_once_or_the_regex():
    got, weight = rewards(
        {"function": "format", "tag": "answer"},
        ["<answer>4</answer>", "4", "<answer>1</answer> <answer>2</answer>", "<answer>\n4\n</answer>"],
    )
    assert got == [1.0, 0.0, 0.0, 1.0] and weight == 1.0
    got, _ = rewards(
        {"function": "format", "regex": r"help you with\?$", "weight": 0.5}, ["Can I help you with?", "No."]
    )
    assert got == [1.0, 0.0]


def test_json_schema_validates_the_answer_or_its_tag():
    schema = {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}
    got, _ = rewards(
        {"function": "json_schema", "schema": schema},
        ['{"price": 12.5}', '{"price": "12"}', "price: 12", '{"cost": 1}'],
    )
    assert got == [1.0, 0.0, 0.0, 0.0]
    got, _ = rewards(
        {"function": "json_schema", "schema": schema, "tag": "json"},
        ['Here: <json>{"price": 3}</json>', '{"price": 3}'],
    )
    assert got == [1.0, 0.0]


def test_exact_answer_compares_with_each_rows_answer():
    got, _ = rewards(
        {"function": "exact_answer", "tag": "answer"},
        ["<answer> Paris </answer>", "<answer>paris</answer>", "Paris", "<answer>Lyon</answer>"],
        answer=["Paris", "Paris", "Paris", "Paris"],
    )
    assert got == [1.0, 1.0, 0.0, 0.0]
    got, _ = rewards(
        {"function": "exact_answer", "case_sensitive": True}, ["paris", "Paris"], answer=["Paris", "Paris"]
    )
    assert got == [0.0, 1.0]
    with pytest.raises(RewardError, match="exact_answer needs each row's answer field"):
        rewards({"function": "exact_answer"}, ["Paris"])


def test_contains_answer_finds_the_rows_answer_in_the_sentence():
    got, _ = rewards(
        {"function": "contains_answer"},
        ["A city bike costs $24 for a day.", "It costs  $24.", "It costs $42.", "Call 555-0142 today"],
        answer=["$24", "$24", "$24", "555-0142"],
    )
    assert got == [1.0, 1.0, 0.0, 1.0]
    got, _ = rewards(
        {"function": "contains_answer", "tag": "answer", "case_sensitive": True},
        ["<answer>Mara Quill owns it</answer>", "Mara Quill <answer>someone</answer>", "<answer>mara quill</answer>"],
        answer=["Mara Quill"] * 3,
    )
    assert got == [1.0, 0.0, 0.0]
    with pytest.raises(RewardError, match="contains_answer needs each row's answer field"):
        rewards({"function": "contains_answer"}, ["x"])


def test_tools_as_json_text_reach_the_functions_as_lists():
    """The kit's GRPO rows carry tools as JSON text (one Arrow schema per column): decoded before the call."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    got, _ = rewards({"function": "tool_call"}, [call, call], tools=[json.dumps(tools), None])
    assert got == [1.0, 0.0]  # the second row offers no tools: the call names none of them


def test_mean_rewards_adds_the_weighted_functions_per_answer(user_module):
    """evaluate's figure: per answer the weighted sum (None adds nothing, as TRL's nansum), averaged;
    and each function's own mean over the answers it scored."""
    entries = [
        {"function": "format", "regex": "^Yes", "weight": 0.5},
        {"function": f"{user_module}:with_none", "weight": 2},
    ]
    got = mean_rewards(
        entries, get_family("qwen3"), ["p"] * 3, as_chat(["Yes", "No", "Yes!"]), {"answer": ["Yes", "No", None]}
    )
    assert got["prompts"] == 3
    assert got["by_function"] == [
        {"function": "format", "weight": 0.5, "mean": 2 / 3},
        {"function": "my_rewards.with_none", "weight": 2.0, "mean": 1.0},
    ]
    assert got["mean"] == pytest.approx((0.5 + 2) / 3 + 2 / 3 + 0.5 / 3)


def test_tool_call_reads_the_familys_markup_against_the_rows_tools():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = '<tool_call>\n{"name": "%s", "arguments": {"city": "Paris"}}\n</tool_call>'
    texts = [call % "get_weather", call % "book_flight", "<tool_call>\n{not json}\n</tool_call>", "It is sunny."]
    got, _ = rewards({"function": "tool_call"}, texts, tools=[tools] * 4)
    assert got == [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent("""
        def brevity(prompts, completions, **kwargs):
            return [1.0 / len(c[0]["content"].split()) for c in completions]
        def too_few(prompts, completions, **kwargs):
            return [1.0]
        def words(prompts, completions, **kwargs):
            return ["good" for c in completions]
        def with_none(prompts, completions, answer, **kwargs):
            return [None if a is None else float(c[0]["content"] == a) for c, a in zip(completions, answer)]
        broken = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_a_users_function_is_called_as_trl_calls_it(user_module):
    got, weight = rewards({"function": f"{user_module}:brevity", "weight": 2}, ["one two", "one"])
    assert got == [0.5, 1.0] and weight == 2.0
    got, _ = rewards({"function": f"{user_module}:with_none"}, ["x", "y"], answer=["x", None])
    assert got == [1.0, None]  # TRL reads None as no reward (NaN)


@pytest.mark.parametrize(
    "function, message",
    [
        (
            "too_few",
            "train.grpo.rewards[0] (my_rewards:too_few): returned 1 values for 2 completions; a reward function "
            "returns one number per completion",
        ),
        (
            "words",
            "train.grpo.rewards[0] (my_rewards:words): returned 'good' (str) among its rewards; each must be a number "
            "(or None: no reward)",
        ),
    ],
)
def test_a_function_that_does_not_return_one_number_per_completion_stops_in_one_line(user_module, function, message):
    with pytest.raises(RewardError) as e:
        rewards({"function": f"{user_module}:{function}"}, ["a", "b"])
    assert str(e.value) == message


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"function": "no_such_module_xyz:f"},
            "train.grpo.rewards[0] (no_such_module_xyz:f): cannot import "
            "no_such_module_xyz: ModuleNotFoundError: No module named 'no_such_module_xyz'",
        ),
        (
            {"function": "my_rewards:missing"},
            "train.grpo.rewards[0] (my_rewards:missing): my_rewards has no function missing",
        ),
        (
            {"function": "my_rewards:broken"},
            "train.grpo.rewards[0] (my_rewards:broken): my_rewards has no function broken",
        ),
        (
            {"function": "fromat", "tag": "a"},
            "train.grpo.rewards[0] (fromat): not a built-in reward (format, json_schema, "
            "exact_answer, contains_answer, tool_call) nor module:function",
        ),
        ({"function": "format"}, "train.grpo.rewards[0] (format): needs tag or regex"),
        (
            {"function": "format", "tag": "a", "tags": "b"},
            "train.grpo.rewards[0] (format): unknown setting tags; format takes regex, tag",
        ),
        (
            {"function": "format", "regex": "("},
            "train.grpo.rewards[0] (format): regex does not compile: missing ), unterminated subpattern at position 0",
        ),
        ({"function": "json_schema", "schema": {"type": "objekt"}}, None),
        (
            {"function": "tool_call", "weight": "high"},
            "train.grpo.rewards[0] (tool_call): weight must be a number, got 'high'",
        ),
        (
            "format",
            "train.grpo.rewards[0]: expected {function: NAME, ...}, got 'format'; NAME is one of format, json_schema, "
            "exact_answer, contains_answer, tool_call or module:function",
        ),
    ],
)
def test_an_entry_that_cannot_be_used_is_refused_in_one_line(user_module, entry, message):
    with pytest.raises(RewardError) as e:
        check_entry(0, entry)
    assert "\n" not in str(e.value)
    if message is None:
        assert str(e.value).startswith("train.grpo.rewards[0] (json_schema): schema is not a JSON schema: ")
    else:
        assert str(e.value) == message


def test_no_rewards_is_refused():
    with pytest.raises(RewardError, match="train.grpo.rewards: empty"):
        reward_functions([], get_family("qwen3"))
