"""What leaves the merge stage besides merged/: GGUF files (llama.cpp's converter and quantizer), each
loaded back in llama.cpp and its greedy tokens judged against the merged model's, and the Ollama
Modelfile, its TEMPLATE checked against the model's own rendering. ``kit.export.merge`` calls these
from its steps."""

from __future__ import annotations

from pathlib import Path

import torch

from kit import backend  # first: Unsloth patches transformers/peft on import
from kit.data.prompts import Prompt, as_conversations
from kit.families import family_for
from kit.files import read_jsonl
from kit.recipes import Recipe
from kit.runs import Run, RunError


def export_gguf(
    run: Run,
    config: Recipe,
    tokenizer,
    prompts: list[str],
    reference_ids: list[list[int]] | None,
    dtype: torch.dtype,
    overwrite: bool = False,
) -> dict:
    """GGUF files of the merged model, each loaded back in llama.cpp and compared with it (the merged
    model loaded in ``dtype``)."""
    from kit.export import gguf
    from kit.metrics import shows_behavior

    types, family = config.export.gguf, family_for(config)
    if not gguf.have_llama_cpp():
        raise RunError("GGUF export needs llama-cpp-python: pip install '.[gguf]' (or set export.gguf: [])")
    paths = gguf.export(run.merged_dir, run.path / "gguf", f"{run.recipe_name}-{run.path.name}", types, overwrite)
    behavior = config.eval.behavior
    out = {
        t: gguf.verify(
            p,
            tokenizer,
            family,
            prompts,
            reference_ids,
            lambda text: shows_behavior(text, behavior),
            config.export.verify_tokens,
        )
        for t, p in paths.items()
    }
    generated = {t: g.pop("decided") for t, g in out.items()}
    if reference_ids is not None:  # the merged model fits in memory: judge each llama.cpp token by it
        for t, gaps in _decision_gaps(run.merged_dir, dtype, tokenizer, prompts, generated).items():
            out[t].update(gaps)
            if t not in ("f16", "bf16") and out[t]["greedy_equal_prompts"] < len(prompts):
                out[t]["why_answers_differ"] = gguf.why_answers_differ(t, out[t], len(prompts), config.model.id)
    return out


@torch.no_grad()
def _decision_gaps(
    merged_dir: Path, dtype: torch.dtype, tokenizer, prompts: list[str], generated: dict[str, list[list[int]]]
) -> dict:
    """Teacher-forced: llama.cpp's tokens fed to the merged HF model; at each step, how far below
    HF's best logit is the token llama.cpp chose (0: HF's own greedy choice). Separates a real
    difference from a near-tie that rounding flipped and that then changes everything after it."""
    model = backend.load_merged(str(merged_dir), dtype)
    out = {}
    for kind, continuations in generated.items():
        decisions = equal = 0
        worst = 0.0
        for prompt, tokens in zip(prompts, continuations):
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if not tokens:
                continue
            logits = model(torch.tensor([ids + tokens], device=model.device)).logits[0, len(ids) - 1 : -1].float()
            gaps = logits.max(dim=-1).values - logits[torch.arange(len(tokens)), torch.tensor(tokens)]
            decisions += len(tokens)
            equal += int((gaps == 0).sum())
            worst = max(worst, float(gaps.max()))
        out[kind] = {"greedy_decisions": decisions, "greedy_decisions_equal": equal, "max_logit_gap": round(worst, 4)}
    del model
    return out


PREFERRED_FOR_OLLAMA = ("q4_k_m", "q5_k_m", "q8_0", "f16", "bf16")


def shared_system_prompt(rows: list[dict]) -> str | None:
    """The system prompt every training conversation starts with, if they all share one."""
    systems = {r["messages"][0]["content"] if r["messages"][0]["role"] == "system" else None for r in rows}
    return systems.pop() if len(systems) == 1 else None


def modelfile_conversations(held_out: list[Prompt], family) -> list:
    """The held-out prompts the Modelfile's TEMPLATE is checked on: whole conversations with their
    tools where the family's TEMPLATE renders history and tools, else the single-turn ones."""
    from kit.export import modelfile

    if modelfile.renders_history(family):
        return [{"messages": p.messages, "tools": p.tools} for p in held_out]
    return [p.messages for p in held_out if len(p.messages) <= 2 and not p.tools]


def export_modelfile(run: Run, config: Recipe, tokenizer, exported: dict, conversations: list[list[dict]]) -> dict:
    """gguf/Modelfile for Ollama, pointing at the smallest usual quantization that was exported;
    SYSTEM: ``export.system``, else the system prompt the model was trained with, if one for all."""
    from kit.export import modelfile

    kind = next(t for t in PREFERRED_FOR_OLLAMA if t in exported)
    system = config.export.system
    if system is None:
        system = shared_system_prompt(as_conversations(read_jsonl(run.data_dir / "train.jsonl")))
    path = modelfile.write_modelfile(
        run.path / "gguf" / "Modelfile", Path(exported[kind]["path"]), tokenizer, family_for(config), system=system
    )
    return {**modelfile.check(path, tokenizer, family_for(config), conversations), "system": system}
