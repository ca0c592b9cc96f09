"""Per-model chat formatting: the family table, each family's official template, prompts and
training examples rendered through it with assistant-only loss masks, and tool calls in and out of
each family's format."""
