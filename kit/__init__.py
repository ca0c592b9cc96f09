"""Unsloth notebook kit: prepare → train → evaluate → merge an LLM fine-tune on your chat data.

Modules are imported one by one (``from kit import train``) so that a notebook pays only for what
it uses; ``kit.train``, ``kit.evaluate`` and ``kit.merge`` import Unsloth first (``kit.backend``).
"""
__version__ = "0.1.0"
