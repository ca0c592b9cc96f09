"""The one table of what differs between model families at the chat-format level.

Masks are derived by rendering with the model's own chat template (see ``kit.chat.render``): a family
only says which token closes an assistant turn and which generation-prompt variants may open one.

Every place where the kit's training text intentionally differs from the official template's
rendering is a field here: ``training_patch`` (DeepSeek-R1-Distill keeps the trained turn's
reasoning) and ``training_suffix`` (GLM-4 ends the last answer with <|endoftext|>).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class ToolRules:
    """What a family's chat template can express of tool calls (it renders tool definitions, calls
    and results itself; these are the limits the kit checks first, so a row that breaks one is a
    clear error instead of a template exception or, worse, a call the template silently leaves out)."""

    # The most calls one assistant turn may hold (None: any number, parallel calls).
    calls_per_turn: int | None = None
    # False: the template renders a call turn without its text, so such text cannot be trained.
    text_with_calls: bool = True
    # False: a call turn carries text or reasoning, not both (gpt-oss: either is its analysis message).
    text_and_reasoning_with_calls: bool = True
    # The template drops a call turn's text and reasoning once a final answer follows it (gpt-oss);
    # the kit drops them before rendering, so every turn's prompt is the history as rendered.
    history_drops_call_text: bool = False


@dataclass(frozen=True)
class Family:
    name: str
    # Closes every assistant turn: trained (so the model learns to stop) and used as the stop token.
    end_of_turn: str
    # The model's official chat template as TRL ships it (trl/chat_templates/<name>.jinja): used
    # when a tokenizer has none (base checkpoints) and as the reference in tests.
    official_template: str
    # apply_chat_template kwargs whose generation prompt may open an assistant turn in a rendered
    # conversation; the longest one that matches the rendering is prompt, the rest is supervised.
    prompt_variants: tuple[dict, ...] = ({},)
    # Generation-prompt kwargs used at inference (evaluation, chat) unless a caller overrides them.
    inference_kwargs: dict = field(default_factory=dict)
    # Recommended sampling for free-running generation (greedy is used for comparisons).
    sampling: dict = field(default_factory=dict)
    # The message field the chat template reads an assistant's reasoning from (None: no channel;
    # canonical ``reasoning`` is then dropped and counted by prepare).
    reasoning_field: str | None = None
    # Tags around reasoning in generated text, if the family has a reasoning channel of that shape.
    reasoning_tags: tuple[str, str] | None = None
    # Generated text after which the final answer starts (gpt-oss's final channel); such families'
    # output is decoded with special tokens kept, since their channel markers are special tokens.
    answer_marker: str | None = None
    # The generation-prompt kwarg that switches thinking on and off, if any.
    thinking_kwarg: str | None = None
    # Other tokens that may end an assistant turn (trained when they do; stop generation).
    stop_tokens: tuple[str, ...] = ()
    # Tokens that end one message of an assistant turn that may go on with another (gpt-oss's
    # <|end|> after the analysis channel): they close a history turn's span, but generation goes on.
    message_end_tokens: tuple[str, ...] = ()
    # The template itself, for a family whose official template TRL does not ship.
    template_text: str | None = None
    # Reasoning written into the assistant content as <think>\n…\n</think>\n\n (an empty block
    # when there is none), for templates that expect it there.
    reasoning_inline: bool = False
    # (fragment, replacement) applied to the chat template for training renders only.
    training_patch: tuple[str, str] | None = None
    # Appended to the training text of a conversation (the last answer's end-of-turn).
    training_suffix: str = ""
    # data.train_on when the recipe leaves it null.
    default_train_on: str = "all_assistant"
    # How the template expresses tools (definitions, calls, results); None: it cannot, and
    # ``no_tools`` says why (a conversation with tools is then refused, naming the family).
    tools: ToolRules | None = None
    no_tools: str = ""
    # True: ``template_text`` replaces the tokenizer's own template (SmolLM2: the kit's template renders
    # every conversation the official one renders identically, and adds a tool format it lacks).
    own_template: bool = False

    @property
    def stops(self) -> tuple[str, ...]:
        """Tokens that end generation."""
        return (self.end_of_turn, *self.stop_tokens)

    @property
    def end_tokens(self) -> tuple[str, ...]:
        """Tokens that may close a trained span."""
        return (*self.stops, *self.message_end_tokens)


# SmolLM2-Instruct's official template (ChatML, a default system prompt naming the model) renders no
# tools. The kit's template renders every conversation without tools exactly as it does (a test
# compares them) and adds tools in the Hermes style the Qwen families use: the definitions (each
# function's JSON schema) after the first system turn's text, a call as a <tool_call> JSON block,
# a result as a ``tool`` turn.
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_TOOLS_HEAD = "\n\nYou can call these tools, each given as a JSON schema:\n<tools>"
SMOLLM2_TOOLS_TAIL = (
    "\n</tools>\nTo call one, answer with <tool_call>\n"
    '{"name": <tool name>, "arguments": <arguments as a JSON object>}\n</tool_call>'
)


def _jinja_string(text: str) -> str:
    """``text`` as a Jinja string literal (literal text outside expressions would meet trim_blocks)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


SMOLLM2_TEMPLATE = (
    "{% set tools_text %}{% if tools %}{{ " + _jinja_string(SMOLLM2_TOOLS_HEAD) + " }}"
    "{% for tool in tools %}{{ '\\n' }}{{ tool.function | tojson }}{% endfor %}"
    "{{ " + _jinja_string(SMOLLM2_TOOLS_TAIL) + " }}{% endif %}{% endset %}"
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SMOLLM2_DEFAULT_SYSTEM + "' + tools_text + '<|im_end|>\\n' }}{% endif %}"
    "{% if loop.first and message['role'] == 'system' %}"
    "{{ '<|im_start|>system\\n' + message['content'] + tools_text + '<|im_end|>\\n' }}"
    "{% elif message['role'] == 'assistant' and message.tool_calls %}"
    "{{ '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{% for call in message.tool_calls %}{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    '{{ \'<tool_call>\\n{"name": "\' + call.function.name + \'", "arguments": \' }}'
    "{{ call.function.arguments | tojson }}{{ '}\\n</tool_call>' }}{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


FAMILIES: dict[str, Family] = {
    # Qwen3's template renders an empty <think></think> block before the last assistant answer; the
    # enable_thinking=False generation prompt contains it, so it stays prompt and is never trained.
    "qwen3": Family(
        name="qwen3",
        end_of_turn="<|im_end|>",
        official_template="qwen3",
        prompt_variants=({"enable_thinking": True}, {"enable_thinking": False}),
        inference_kwargs={"enable_thinking": False},
        sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20},
        reasoning_field="reasoning_content",  # rendered only after the last user turn, as at inference
        reasoning_tags=("<think>", "</think>"),
        thinking_kwarg="enable_thinking",
        tools=ToolRules(),  # definitions in the system turn, <tool_call> JSON blocks, <tool_response> in user turns
    ),
    # Qwen2.5 adds its default system prompt ("You are Qwen, created by Alibaba Cloud...") when a
    # conversation has none, at training and at inference alike.
    "qwen2.5": Family(
        name="qwen2.5",
        end_of_turn="<|im_end|>",
        official_template="qwen2_5",
        sampling={"temperature": 0.7, "top_p": 0.8, "top_k": 20},
        tools=ToolRules(),  # as Qwen3
    ),
    # Llama 3.1 writes <|begin_of_text|> and a system header with knowledge/today dates itself.
    "llama-3.1": Family(
        name="llama-3.1",
        end_of_turn="<|eot_id|>",
        official_template="llama3_1",
        sampling={"temperature": 0.6, "top_p": 0.9},
        # Definitions in the first user turn, a call as {"name": ..., "parameters": {...}}, results as
        # ipython turns (JSON-quoted); one call per turn, and no text beside it.
        tools=ToolRules(calls_per_turn=1, text_with_calls=False),
    ),
    # Gemma 3 has no system role: the template prepends the system text to the first user turn.
    "gemma-3": Family(
        name="gemma-3",
        end_of_turn="<end_of_turn>",
        official_template="gemma3",
        sampling={"temperature": 1.0, "top_k": 64, "top_p": 0.95},
        no_tools="its chat template has no format for tool definitions, tool calls or tool results",
    ),
    # gpt-oss (harmony): the last assistant turn renders its `thinking` in the analysis channel and
    # ends with <|return|>; earlier turns keep only the final channel and end with <|end|>. The
    # model itself writes "<|end|><|start|>assistant" between analysis and final, so a turn is
    # trained whole; harmony stops generation at <|return|> or <|call|>, never at <|end|>.
    "gpt-oss": Family(
        name="gpt-oss",
        end_of_turn="<|return|>",
        stop_tokens=("<|call|>",),
        message_end_tokens=("<|end|>",),
        official_template="gptoss",
        reasoning_field="thinking",
        reasoning_tags=("<|channel|>analysis<|message|>", "<|end|>"),
        answer_marker="<|channel|>final<|message|>",
        sampling={"temperature": 1.0, "top_p": 1.0},
        # Definitions as a TypeScript namespace in the developer turn; a call is its own message
        # "to=functions.NAME" on the commentary channel, ended by <|call|>; results are JSON-quoted.
        tools=ToolRules(calls_per_turn=1, text_and_reasoning_with_calls=False, history_drops_call_text=True),
    ),
    # DeepSeek-R1-Distill: the official template drops everything up to </think> from every
    # assistant turn and prefills "<think>\n" in the generation prompt. The kit keeps the trained
    # (last) turn's reasoning, so the model learns to write it: the one intended difference.
    "deepseek-r1-distill": Family(
        name="deepseek-r1-distill",
        end_of_turn="<｜end▁of▁sentence｜>",
        official_template="deepseek_r1_distill",
        reasoning_inline=True,
        training_patch=("{% if '</think>' in content %}", "{% if '</think>' in content and not loop.last %}"),
        reasoning_tags=("<think>", "</think>"),
        sampling={"temperature": 0.6, "top_p": 0.95},
        default_train_on="last_assistant",  # earlier turns are rendered without their reasoning
        no_tools=(
            "TRL's copy of its chat template never renders the tool definitions, renders calls only in "
            "turns without text and leaves a single call without its end-of-turn token"
        ),
    ),
    # GLM-4-9B-chat (glm-4-9b-chat-hf): no end-of-turn token; a turn ends where the next
    # <|user|> / <|observation|> begins or at <|endoftext|>, which the kit appends to the last answer.
    # Tools as GLM-4 writes them: the definitions in a system turn first, a call as
    # "<|assistant|>NAME\n{arguments}" (one such message per call, after the turn's text, if any),
    # each result as an <|observation|> turn. The official template's system text around the
    # definitions (a Chinese preamble) is not reproduced: the kit's own line introduces them.
    "glm-4": Family(
        name="glm-4",
        end_of_turn="<|endoftext|>",
        stop_tokens=("<|user|>", "<|observation|>"),
        official_template="glm-4",
        template_text=(
            "[gMASK]<sop>"
            "{% if tools %}<|system|>{{ '\\n# Available tools' }}{% for tool in tools %}"
            "{{ '\\n\\n## ' + tool.function.name + '\\n\\n' }}{{ tool.function | tojson(indent=4) }}{% endfor %}"
            "{{ '\\n\\nTo call a tool, write its name, a newline and its arguments as one JSON object.' }}{% endif %}"
            "{% for m in messages %}"
            "{% if m.role == 'assistant' and m.tool_calls %}"
            "{% if m.content %}<|assistant|>{{ '\\n' + m.content }}{% endif %}"
            "{% for call in m.tool_calls %}<|assistant|>{{ call.function.name }}{{ '\\n' }}"
            "{{ call.function.arguments | tojson }}{% endfor %}"
            "{% elif m.role == 'tool' %}<|observation|>{{ '\\n' + m.content }}"
            "{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        ),
        training_suffix="<|endoftext|>",
        sampling={"temperature": 0.8, "top_p": 0.8},
        tools=ToolRules(),
    ),
    # SmolLM2-Instruct (Llama architecture, ChatML): the kit's template (above) in place of the
    # tokenizer's; sampling as its model card recommends.
    "smollm2": Family(
        name="smollm2",
        end_of_turn="<|im_end|>",
        official_template="smollm2",
        template_text=SMOLLM2_TEMPLATE,
        own_template=True,
        sampling={"temperature": 0.2, "top_p": 0.9},
        tools=ToolRules(),
    ),
}


def family_for(recipe) -> Family:  # a kit.recipes.Recipe (which imports this table, so not named here)
    """The recipe's family, with ``data.reasoning: inline`` applied: reasoning written into the
    answer as a <think> block, for families whose template has no reasoning channel."""
    family = get_family(recipe.model.family)
    if recipe.data.reasoning == "inline" and not family.reasoning_field and not family.reasoning_inline:
        family = replace(family, reasoning_inline=True, reasoning_tags=("<think>", "</think>"))
    return family


def official_template(family: Family) -> str:
    if family.template_text is not None:
        return family.template_text
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{family.official_template}.jinja").read_text(
        encoding="utf-8"
    )


def training_template(tokenizer, family: Family) -> str:
    """The chat template used to render training text: the tokenizer's own, with the family's
    declared patch applied."""
    template = tokenizer.chat_template
    if family.training_patch:
        fragment, replacement = family.training_patch
        if fragment not in template:
            raise ValueError(
                f"{family.name}: the tokenizer's chat template lacks {fragment!r}, which the kit patches "
                "to keep the trained turn's reasoning; is this the official template?"
            )
        template = template.replace(fragment, replacement)
    return template


def ensure_chat_template(tokenizer, family: Family):
    """A tokenizer without a chat template (base checkpoints) gets the family's official one; a family
    with its own template (``Family.own_template``) always renders with that."""
    if family.own_template and tokenizer.chat_template != family.template_text:
        if tokenizer.chat_template:
            print(
                f"Using the kit's {family.name} chat template: it renders conversations without tools as the "
                "tokenizer's own does, and adds tools."
            )
        tokenizer.chat_template = family.template_text
    elif not tokenizer.chat_template:
        print(f"The tokenizer has no chat template; using the official {family.name} template.")
        tokenizer.chat_template = official_template(family)
    return tokenizer


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
