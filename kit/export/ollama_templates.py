"""Ollama TEMPLATEs for the families whose chat template renders tools: written per family in Go's
template language over Ollama's ``.Messages`` and ``.Tools``, so that a model served by Ollama
sees tool definitions, its own earlier calls and the tool results as it was trained on them.

Each is the family's chat template (as ``kit.chat.render`` renders prompts) transcribed; ``kit.export.modelfile``
checks that it renders every held-out prompt as the chat template does. What Ollama cannot do the
same way is declared in ``DIFFERENCES`` (the check allows those and nothing else); the first entry
holds for every family here:

- Ollama hands the template parsed JSON and its ``json`` function writes Go's compact JSON
  (``{"city":"Zürich"}``, ``<``/``>``/``&`` as ``\\u003c``/``\\u003e``/``\\u0026``), where the chat
  templates write ``{"city": "Zürich"}`` or indented JSON. Tool definitions, call arguments and
  JSON-quoted results therefore hold the same values in another layout (and, in Ollama versions
  that keep tool-definition properties in a map, another key order).

Leading BOS is left to Ollama's runner, as for the other families' templates. A last message from
the assistant is rendered closed, followed by a new generation prompt (no prefill).
"""

from __future__ import annotations

from kit.families import SMOLLM2_DEFAULT_SYSTEM, SMOLLM2_TOOLS_HEAD, SMOLLM2_TOOLS_TAIL

JSON_LAYOUT = "JSON (tool definitions, call arguments, quoted results) in Go's compact layout; the same values"

# Shared pieces of the two Qwen templates: definitions in the system turn, calls as <tool_call>
# JSON blocks after the text, consecutive results in one user turn as <tool_response> blocks.
_QWEN_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{{ range .Tools }}\n{{ json . }}{{ end }}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)
# The first message, if it is a system message, goes to the system turn ($system, $hasSystem).
_FIRST_SYSTEM = (
    '{{ $system := "" }}{{ $hasSystem := false }}'
    '{{ range $i, $m := .Messages }}{{ if and (eq $i 0) (eq .Role "system") }}'
    "{{ $system = .Content }}{{ $hasSystem = true }}{{ end }}{{ end }}"
)
# A run of tool results is one user turn: opened by the first, closed before the next other message
# (or at the end); $previous is the role of the message before.
_QWEN_RESULTS = (
    '{{ else if eq .Role "tool" }}{{ if ne $previous "tool" }}<|im_start|>user{{ end }}'
    "\n<tool_response>\n{{ .Content }}\n</tool_response>"
)
_CLOSE_RESULTS = '{{ if and (eq $previous "tool") (ne .Role "tool") }}<|im_end|>\n{{ end }}'
_QWEN_CALLS = (
    "{{ range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}\n{{ end }}"
    '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}\n</tool_call>'
    "{{ end }}"
)

QWEN3 = (
    _FIRST_SYSTEM
    # Reasoning is rendered only for assistant turns after the last user turn (the agent's current
    # steps); Qwen3's template leaves it out of earlier turns.
    + "{{ $lastUser := len .Messages }}"
    + '{{ range $i, $m := .Messages }}{{ if eq .Role "user" }}{{ $lastUser = $i }}{{ end }}{{ end }}'
    + "{{ if .Tools }}<|im_start|>system\n{{ if $hasSystem }}{{ $system }}\n\n{{ end }}"
    + _QWEN_TOOLS
    + "{{ else if $hasSystem }}<|im_start|>system\n{{ $system }}<|im_end|>\n{{ end }}"
    + '{{ $previous := "" }}{{ range $i, $m := .Messages }}'
    + _CLOSE_RESULTS
    + '{{ if and (eq $i 0) (eq .Role "system") }}'
    + '{{ else if or (eq .Role "user") (eq .Role "system") }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
    + '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n'
    + "{{ if and (gt $i $lastUser) .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}"
    + "{{ .Content }}"
    + _QWEN_CALLS
    + "<|im_end|>\n"
    + _QWEN_RESULTS
    + "{{ end }}{{ $previous = .Role }}{{ end }}"
    + '{{ if eq $previous "tool" }}<|im_end|>\n{{ end }}'
    # The generation prompt as the kit prompts at inference (thinking off: an empty think block).
    + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)

_QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25 = (
    _FIRST_SYSTEM
    + f'{{{{ if not $hasSystem }}}}{{{{ $system = "{_QWEN25_DEFAULT_SYSTEM}" }}}}{{{{ end }}}}'
    + "<|im_start|>system\n{{ $system }}{{ if .Tools }}\n\n"
    + _QWEN_TOOLS
    + "{{ else }}<|im_end|>\n{{ end }}"
    + '{{ $previous := "" }}{{ range $i, $m := .Messages }}'
    + _CLOSE_RESULTS
    + '{{ if and (eq $i 0) (eq .Role "system") }}'
    + '{{ else if and (eq .Role "assistant") .ToolCalls }}<|im_start|>assistant'
    + "{{ if .Content }}\n{{ .Content }}{{ end }}"
    + '{{ range .ToolCalls }}\n<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": '
    + "{{ json .Function.Arguments }}}\n</tool_call>{{ end }}<|im_end|>\n"
    + _QWEN_RESULTS
    + "{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    + "{{ end }}{{ $previous = .Role }}{{ end }}"
    + '{{ if eq $previous "tool" }}<|im_end|>\n{{ end }}'
    + "<|im_start|>assistant\n"
)

# Llama 3.1: the definitions go into the first user turn (after the system turn), a call is
# {"name": ..., "parameters": {...}}, a result an ipython turn holding its content JSON-quoted.
_LLAMA_TOOLS = (
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Given the following functions, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.'
    "Do not use variables.\n\n{{ range $.Tools }}{{ json . }}\n\n{{ end }}{{ .Content }}<|eot_id|>"
)
LLAMA31 = (
    _FIRST_SYSTEM
    + "<|start_header_id|>system<|end_header_id|>\n\n{{ if .Tools }}Environment: ipython\n{{ end }}"
    + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{{ $system }}<|eot_id|>"
    + "{{ $toolsShown := not .Tools }}{{ range $i, $m := .Messages }}"
    + '{{ if and (eq $i 0) (eq .Role "system") }}'
    + "{{ else if not $toolsShown }}{{ $toolsShown = true }}"
    + _LLAMA_TOOLS
    + "{{ else if .ToolCalls }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    + '{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ json .Function.Arguments }}}{{ end }}'
    + "<|eot_id|>"
    + '{{ else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>\n\n{{ json .Content }}<|eot_id|>'
    + "{{ else }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}{{ end }}"
    + "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

# GLM-4 (the family table's own template): definitions in a system turn of their own, each call
# an <|assistant|> message "NAME\n{arguments}", each result an <|observation|> turn.
GLM4 = (
    "[gMASK]<sop>{{ if .Tools }}<|system|>\n# Available tools"
    "{{ range .Tools }}\n\n## {{ .Function.Name }}\n\n{{ json .Function }}{{ end }}"
    "\n\nTo call a tool, write its name, a newline and its arguments as one JSON object.{{ end }}"
    '{{ range .Messages }}{{ if and (eq .Role "assistant") .ToolCalls }}'
    "{{ if .Content }}<|assistant|>\n{{ .Content }}{{ end }}"
    "{{ range .ToolCalls }}<|assistant|>{{ .Function.Name }}\n{{ json .Function.Arguments }}{{ end }}"
    '{{ else if eq .Role "tool" }}<|observation|>\n{{ .Content }}'
    "{{ else }}<|{{ .Role }}|>\n{{ .Content }}{{ end }}{{ end }}<|assistant|>"
)

# SmolLM2 (the family table's own template): the default system prompt where a conversation has none,
# the definitions after the system text, calls as <tool_call> blocks, results as tool turns.
SMOLLM2 = (
    _FIRST_SYSTEM
    + f'{{{{ if not $hasSystem }}}}{{{{ $system = "{SMOLLM2_DEFAULT_SYSTEM}" }}}}{{{{ end }}}}'
    + "<|im_start|>system\n{{ $system }}{{ if .Tools }}"
    + SMOLLM2_TOOLS_HEAD
    + "{{ range .Tools }}\n{{ json .Function }}{{ end }}"
    + SMOLLM2_TOOLS_TAIL
    + "{{ end }}<|im_end|>\n"
    + '{{ range $i, $m := .Messages }}{{ if and (eq $i 0) (eq .Role "system") }}'
    + '{{ else if and (eq .Role "assistant") .ToolCalls }}<|im_start|>assistant\n{{ .Content }}'
    + "{{ range $j, $call := .ToolCalls }}{{ if or $j $m.Content }}\n{{ end }}"
    + '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}\n</tool_call>{{ end }}'
    + "<|im_end|>\n{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"
    + "<|im_start|>assistant\n"
)

TEMPLATES = {"qwen3": QWEN3, "qwen2.5": QWEN25, "llama-3.1": LLAMA31, "glm-4": GLM4, "smollm2": SMOLLM2}

DIFFERENCES = {
    "qwen3": [
        JSON_LAYOUT,
        "the chat template strips newlines around reasoning and the answer after it; Go templates cannot",
    ],
    "qwen2.5": [JSON_LAYOUT],
    "llama-3.1": [
        JSON_LAYOUT,
        "the chat template trims whitespace around the system and message text; Go templates cannot",
        "Today Date is the chat template's default (26 Jul 2024), as in training",
    ],
    "glm-4": [JSON_LAYOUT],
    "smollm2": [JSON_LAYOUT],
}
