"""Unsloth notebook kit: prepare → train → evaluate → merge an LLM fine-tune on your chat data.

Subpackages follow the pipeline: ``kit.data`` (sources, formats, the prepare stage), ``kit.chat``
(per-family rendering, loss masks, tool calls), ``kit.training``, ``kit.evaluation`` and
``kit.export`` (merge, GGUF, Modelfile); shared pieces (recipes, runs, families, files, models,
inference, backend) sit at the top. Dependencies run one way, in layers that import-linter checks
(pyproject.toml; docs/architecture.md).
Modules are imported one by one (``from kit.training import train``) so that a notebook pays only
for what it uses; ``kit.training.train``, ``kit.evaluation.evaluate`` and ``kit.export.merge``
import Unsloth first (``kit.backend``).
"""

__version__ = "0.1.0"
