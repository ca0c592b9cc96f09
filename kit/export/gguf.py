"""GGUF export and its verification, offline: llama.cpp's converter from the llama-cpp-python
sdist, its quantizer and runtime from the llama-cpp-python package (``pip install '.[gguf]'``).

f16 / bf16 / q8_0 come straight from the converter; q4_k_m / q5_k_m are quantized from the f16 file
with llama.cpp's own ``llama_model_quantize``. Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from kit.files import sha256_file

CONVERTER_TYPES = ("f16", "bf16", "q8_0")
QUANTIZED_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}
GGUF_TYPES = CONVERTER_TYPES + tuple(QUANTIZED_TYPES)


class ExportError(RuntimeError):
    pass


def check_types(types: list[str]) -> None:
    unknown = [t for t in types if t not in GGUF_TYPES]
    if unknown:
        raise ExportError(f"unknown GGUF type(s) {', '.join(unknown)}; valid: {', '.join(GGUF_TYPES)}")


def have_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401  (only whether it imports)
    except ImportError:
        return False
    return True


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def convert(merged_dir: Path, out: Path, outtype: str) -> Path:
    """HF safetensors → GGUF with llama.cpp's converter (f16, bf16 or q8_0)."""
    from kit.llama_cpp_source import converter_tree

    tmp = _tmp(out)
    cmd = [
        sys.executable,
        str(converter_tree() / "convert_hf_to_gguf.py"),
        str(merged_dir),
        "--outfile",
        str(tmp),
        "--outtype",
        outtype,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ExportError(f"llama.cpp could not convert {merged_dir} to GGUF: {lines[-1] if lines else 'no output'}")
    tmp.replace(out)
    return out


def quantize(source: Path, out: Path, qtype: str) -> Path:
    """An f16 GGUF → q4_k_m / q5_k_m with llama.cpp's quantizer (through llama-cpp-python)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZED_TYPES[qtype])
    params.nthread = os.cpu_count() or 1
    tmp = _tmp(out)
    if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"llama.cpp could not quantize {source} to {qtype}")
    tmp.replace(out)
    return out


def export(merged_dir: Path, out_dir: Path, name: str, types: list[str], overwrite: bool = False) -> dict[str, Path]:
    """Write ``<name>-<type>.gguf`` for each type into ``out_dir``; an existing file is an error
    unless ``overwrite``."""
    check_types(types)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {t: out_dir / f"{name}-{t}.gguf" for t in types}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"{', '.join(existing)} already exist; pass overwrite=True to replace them")
    f16 = paths.get("f16") or out_dir / f".{name}-f16.base.gguf"
    if any(t in QUANTIZED_TYPES for t in types) or "f16" in types:
        convert(merged_dir, f16, "f16")
    for t in types:
        if t in ("bf16", "q8_0"):
            convert(merged_dir, paths[t], t)
        elif t in QUANTIZED_TYPES:
            quantize(f16, paths[t], t)
    if "f16" not in types:
        f16.unlink(missing_ok=True)
    return paths


def describe(path: Path) -> dict:
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def verify(
    path: Path, tokenizer, family, prompts: list[str], reference_ids: list[list[int]] | None, behavior_fn, n_tokens: int
) -> dict:
    """Load the GGUF in llama.cpp: does it tokenize the prompts like ``tokenizer``, and do its first
    ``n_tokens`` greedy tokens equal ``reference_ids`` (the HF model's, ending where it stopped;
    None: not compared, when the merged model did not fit in memory)? Also the share of answers
    (reasoning split off, as in evaluation) for which ``behavior_fn(text)`` holds. ``decided``
    (llama.cpp's tokens per prompt, with the stop token where it stopped) is returned for the
    caller's teacher-forced check."""
    from llama_cpp import Llama

    from kit.inference import answer_of, stop_ids

    stops = set(stop_ids(tokenizer, family))
    llm = Llama(model_path=str(path), n_ctx=2048, verbose=False, n_threads=os.cpu_count() or 1)
    try:
        tokens_match, all_generated, decided, shows = True, [], [], 0
        for prompt in prompts:
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            tokens_match &= ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
            llm.reset()
            generated, stop = [], []
            for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
                if token in stops or len(generated) >= n_tokens:
                    stop = [token] if token in stops else []
                    break
                generated.append(token)
            all_generated.append(generated)
            decided.append(generated + stop)
            shows += bool(behavior_fn(answer_of(tokenizer, family, generated).text))
    finally:
        llm.close()  # without it llama-cpp-python prints a TypeError at interpreter exit
    out = {**describe(path), "tokens_match": tokens_match, "behavior": shows / len(prompts), "decided": decided}
    if reference_ids is not None:
        out.update(compare_greedy(all_generated, reference_ids, n_tokens))
    return out


def compare_greedy(generated: list[list[int]], reference: list[list[int]], n_tokens: int) -> dict:
    """Per prompt, the tokens llama.cpp and HF agree on before they first differ; a continuation
    that ends (stop token) where the reference ends is whole, whatever its length."""
    prefix, equal = [], 0
    for mine, theirs in zip(generated, reference):
        theirs = theirs[:n_tokens]
        same = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
        whole = mine == theirs
        equal += whole
        prefix.append(n_tokens if whole else same)
    return {"greedy_equal_prompts": equal, "greedy_match_tokens": min(prefix), "greedy_match_per_prompt": prefix}


BITS_PER_WEIGHT = {"q8_0": 8.5, "q5_k_m": 5.7, "q4_k_m": 4.9}


def why_answers_differ(kind: str, g: dict, prompts: int, model_id: str) -> str:
    """Why a quantized file's greedy answers differ from the merged model's on some prompts, from what
    the teacher-forced check measured (``kit.export.packaging._decision_gaps``)."""
    from kit.models import PROVENANCE

    text = (
        f"{prompts - g['greedy_equal_prompts']} of {prompts} greedy answers differ from the merged model's. "
        f"{kind} keeps about {BITS_PER_WEIGHT.get(kind, 'fewer')} bits a weight, so where the merged model's "
        f"best two tokens nearly tie, llama.cpp may take the other and continue differently from there: "
        f"{g['greedy_decisions_equal']} of its {g['greedy_decisions']} tokens are the merged model's own greedy "
        f"choice, and every other one is within {g['max_logit_gap']} of the merged model's best logit."
    )
    if model_id in PROVENANCE:
        text += f" The base model ({model_id}): {PROVENANCE[model_id]}."
    return text
