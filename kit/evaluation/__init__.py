"""Evaluation: batched generation in Unsloth's inference mode, the metrics, and the evaluate stage
(base vs tuned on held-out prompts, tool-call scores, predictions)."""
