"""Training speed and memory of the kit (``kit.training.train.train`` on a prepared run) against Unsloth's own
loop (FastLanguageModel + get_peft_model + TRL SFTTrainer, as Unsloth's notebooks do) and against
plain transformers + PEFT, on the same model, tokenized rows, batch, accumulation, LoRA and steps.

Each way runs in a fresh process. s/step is timed over the steps after ``--warmup``; tokens/s counts
real (unpadded) tokens of those steps; peak memory is the GPU's max reserved, or on CPU the process's
peak RSS. The plain baseline loads in bitsandbytes 4-bit (NF4) and trains with TRL's SFTTrainer on a
GPU; on CPU, where TRL's SFTTrainer crashes without Unsloth's patches, with transformers' Trainer
(and in the model's own dtype: bitsandbytes' 4-bit CPU path is Unsloth's).

    .venv/bin/python bench/train.py                       # CPU: the tiny demo model, a few minutes
    .venv/bin/python bench/train.py --shape qwen3-8b      # GPU: a random model with Qwen3-8B's shapes
    .venv/bin/python bench/train.py --ways unsloth,kit --repeats 8 --noise-floor --steps 40
        # the overhead test: per-round kit/Unsloth ratios beside Unsloth's loop against itself
    .venv/bin/python bench/train.py --same-process --repeats 6 --steps 40
        # the kit's trainer and Unsloth's loop taking turns in one process (no process-to-process spread)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Qwen3-8B's published config (hidden, layers, heads, vocabulary); the weights are random.
QWEN3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}

BUILD = r"""
import json, sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from kit.demos.tiny import ensure_tiny_model
out, shape = Path(sys.argv[1]), json.loads(sys.argv[2])
config = AutoConfig.from_pretrained(ensure_tiny_model())
config.update({**shape, "layer_types": ["full_attention"] * shape["num_hidden_layers"], "dtype": "bfloat16"})
torch.manual_seed(0)
# Initialised on the GPU itself: no 16 GB host copy; saved in 5 GB shards.
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(out, max_shard_size="5GB")
AutoTokenizer.from_pretrained(ensure_tiny_model()).save_pretrained(out)
print(sum(p.numel() for p in model.parameters()))
"""

# One prepared run for all ways: the kit trains on it; the others read the same tokenized rows.
PREPARE = r"""
import json, os, sys
from pathlib import Path
work, recipe_name, overrides = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
os.environ["KIT_RUNS_DIR"] = str(work / "runs")
from kit.training import train as T  # Unsloth first
from kit.families import family_for
from kit.data.prepare import prepare
from kit.data.tokenize import load_tokenizer
from kit.models import resolve_model_id
run = prepare(recipe_name, overrides, run_id="bench").run
recipe = run.config()
tokenizer = load_tokenizer(recipe.model.id, family_for(recipe))  # prepare's, with the family's template
examples = T.tokenized_split(run, "train", tokenizer, recipe).to_list()
(work / "examples.json").write_text(json.dumps(examples))
(work / "setup.json").write_text(json.dumps({"run": str(run.path), "model": resolve_model_id(recipe.model.id),
                                             "recipe": recipe.to_dict()}))
print(len(examples))
"""

CLOCK = r"""
import time, torch
from transformers import TrainerCallback

class Clock(TrainerCallback):
    # Wall and CPU time, and real tokens, from the end of step `warmup` to the end of the last step;
    # peak memory at the end of the last step (before anything a way does after training).
    def __init__(self, warmup):
        self.warmup, self.marks, self.tokens = warmup, {}, 0
    def count(self, inputs):
        # Real tokens of a micro-batch, summed on the device: no synchronisation per step.
        mask = inputs.get("attention_mask")
        self.tokens = self.tokens + (mask.sum() if mask is not None else inputs["input_ids"].numel())
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.warmup, state.max_steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks[state.global_step] = (time.perf_counter(), time.process_time(), int(self.tokens))
            if state.global_step == state.max_steps:
                self.peak = peak_memory()
    def result(self, steps):
        (w0, c0, n0), (w1, c1, n1) = self.marks[self.warmup], self.marks[steps]
        return {"s_per_step": (w1 - w0) / (steps - self.warmup), "cpu_s_per_step": (c1 - c0) / (steps - self.warmup),
                "tokens_per_s": (n1 - n0) / (w1 - w0), **self.peak}

def peak_memory():
    if torch.cuda.is_available():
        return {"peak_gb": torch.cuda.max_memory_reserved() / 2**30, "memory": "GPU max reserved"}
    import resource
    return {"peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "memory": "peak RSS"}

def loop_args(recipe, steps, output_dir):
    # SFTConfig / TrainingArguments as Unsloth's notebooks write them, with the recipe's numbers.
    train = recipe["train"]
    return dict(per_device_train_batch_size=train["per_device_train_batch_size"],
                gradient_accumulation_steps=train["gradient_accumulation_steps"], max_steps=steps,
                learning_rate=train["learning_rate"], warmup_steps=train["warmup_steps"], weight_decay=train["weight_decay"],
                lr_scheduler_type=train["lr_scheduler_type"], optim=train["optim"], seed=train["seed"],
                logging_steps=steps, save_strategy="no", report_to="none", output_dir=str(output_dir))

def counted(trainer_class, clock):
    # The way's own trainer class, counting the real tokens of each micro-batch it trains on.
    class Counted(trainer_class):
        def training_step(self, model, inputs, *args, **kwargs):
            clock.count(inputs)
            return super().training_step(model, inputs, *args, **kwargs)
    return Counted
"""

MEASURE = (
    CLOCK
    + r"""
import json, os, sys
from pathlib import Path
way, work, bench = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
setup = json.loads((work / "setup.json").read_text())
recipe, steps, warmup = setup["recipe"], bench["steps"], bench["warmup"]
lora, train, cuda = recipe["lora"], recipe["train"], torch.cuda.is_available()
clock = Clock(warmup)
common = loop_args(recipe, steps, work / f"out-{way}")

def examples():
    from datasets import Dataset
    return Dataset.from_list(json.loads((work / "examples.json").read_text()))

if way == "kit":
    os.environ["KIT_RUNS_DIR"] = str(work / "runs")
    from kit.training import train as T
    from kit.runs import Run

    from kit.training.trainers import KitSFTTrainer

    class Timed(counted(KitSFTTrainer, clock)):  # the kit's trainer, with the clock among its callbacks
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), clock], **kwargs)

    import shutil
    fresh = Path(setup["run"]).with_name(f"bench-{os.getpid()}")  # runs are never retrained: a copy per repeat
    shutil.copytree(setup["run"], fresh)
    run = Run(fresh)
    T.train(run, run.config(), trainer_class=Timed)
elif way.startswith("unsloth"):  # "unsloth-again": the same loop a second time, for the noise floor
    from unsloth import FastLanguageModel
    from trl import SFTConfig, SFTTrainer
    model, tokenizer = FastLanguageModel.from_pretrained(setup["model"], max_seq_length=recipe["model"]["max_seq_length"],
                                                         load_in_4bit=recipe["model"]["load_in_4bit"])
    model = FastLanguageModel.get_peft_model(model, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                             target_modules=lora["target_modules"], bias="none",
                                             use_gradient_checkpointing=lora["use_gradient_checkpointing"],
                                             use_rslora=lora["use_rslora"], random_state=train["seed"])
    trainer = counted(SFTTrainer, clock)(model=model, processing_class=tokenizer, train_dataset=examples(), callbacks=[clock],
                         args=SFTConfig(max_length=recipe["model"]["max_seq_length"], **common))
    trainer.train()
else:  # transformers + PEFT, Unsloth never imported
    assert "unsloth" not in sys.modules
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    tokenizer = AutoTokenizer.from_pretrained(setup["model"])
    checkpointing = bool(lora["use_gradient_checkpointing"])
    if cuda:
        bf16 = torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float16
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=dtype) if recipe["model"]["load_in_4bit"] else None
        model = AutoModelForCausalLM.from_pretrained(setup["model"], dtype=dtype, quantization_config=quantization,
                                                     device_map={"": 0})
        if quantization:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    else:
        model = AutoModelForCausalLM.from_pretrained(setup["model"], dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                             target_modules=lora["target_modules"], use_rslora=lora["use_rslora"],
                                             bias="none", task_type="CAUSAL_LM"))
    if cuda:
        from trl import SFTConfig, SFTTrainer
        args = SFTConfig(max_length=recipe["model"]["max_seq_length"], gradient_checkpointing=checkpointing,
                         bf16=bf16, fp16=not bf16, **common)
        trainer = counted(SFTTrainer, clock)(model=model, processing_class=tokenizer, train_dataset=examples(), args=args,
                             callbacks=[clock])
    else:
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
        tokenizer.padding_side = "right"  # as TRL's collator pads
        trainer = counted(Trainer, clock)(model=model, args=TrainingArguments(gradient_checkpointing=checkpointing, **common),
                          train_dataset=examples(), data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
                          callbacks=[clock])
    trainer.train()
print("RESULT " + json.dumps(clock.result(steps)))
"""
)

# Both loops in one process, on one model, taking turns (LoRA weights reset before each): what the
# kit adds to Unsloth's loop (its trainer class, SFTConfig and callbacks) without the process-to-process
# spread of a shared machine, which is larger than the difference sought.
SAME_PROCESS = (
    CLOCK
    + r"""
import json, os, sys
from pathlib import Path
work, bench = Path(sys.argv[1]), json.loads(sys.argv[2])
setup = json.loads((work / "setup.json").read_text())
os.environ["KIT_RUNS_DIR"] = str(work / "runs")
from kit.training import train as T  # Unsloth first
from kit.runs import Run
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
steps, warmup = bench["steps"], bench["warmup"]
run = Run(Path(setup["run"]))
recipe = run.config()
model, tokenizer = T.load_model(recipe)
model = T.add_lora(model, recipe)
start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
examples = Dataset.from_list(json.loads((work / "examples.json").read_text()))
from kit.training.trainers import KitSFTTrainer

def unsloth(clock):
    args = SFTConfig(max_length=recipe.model.max_seq_length, **loop_args(recipe.to_dict(), steps, work / "out-same"))
    return counted(SFTTrainer, clock)(model=model, processing_class=tokenizer, train_dataset=examples, args=args,
                                      callbacks=[clock])

def kit(clock):
    trainer = T.build_trainer(run, recipe, model, tokenizer, trainer_class=counted(KitSFTTrainer, clock))
    trainer.add_callback(clock)
    return trainer

for repeat in range(bench["repeats"]):
    for way in (["unsloth", "kit"] if repeat % 2 == 0 else ["kit", "unsloth"]):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n])
        clock = Clock(warmup)
        {"unsloth": unsloth, "kit": kit}[way](clock).train()
        print("RESULT " + json.dumps({"round": repeat + 1, "way": way, **clock.result(steps)}), flush=True)
"""
)


def same_process(work: Path, args) -> None:
    out = python(SAME_PROCESS, work, json.dumps({"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats}))
    results = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    for r in results:
        print(
            f"[{r['round']}] {r['way']:8s} {r['s_per_step']:7.3f} s/step ({r['cpu_s_per_step']:.3f} CPU s/step) "
            f"{r['tokens_per_s']:9.0f} real tokens/s"
        )
    by_round = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["way"]] = r["s_per_step"]
    print("same process, per-round s/step kit/unsloth: " + spread([r["kit"] / r["unsloth"] for r in by_round.values()]))


def spread(ratios: list[float]) -> str:
    ratios = sorted(ratios)
    return (
        f"median {statistics.median(ratios):.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f} "
        f"({', '.join(f'{r:.3f}' for r in ratios)})"
    )


def python(code: str, *args) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-4000:])
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=["tiny", "qwen3-8b"], default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--ways", default="unsloth,kit,transformers")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all ways; medians compared")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="the kit's trainer and Unsloth's loop taking turns in one process, on one model",
    )
    parser.add_argument(
        "--noise-floor", action="store_true", help="run Unsloth's loop twice per round: how far it differs from itself"
    )
    args = parser.parse_args()
    cuda = python("import torch; print(torch.cuda.is_available())").strip() == "True"
    train = {
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": args.accumulation,
        "warmup_steps": 0,
        "eval_steps": args.steps + 1,
        "save_steps": args.steps + 1,
        "logging_steps": args.steps,
        # One optimizer for all: Unsloth's choice on each device (fused AdamW is its CPU choice).
        "optim": "adamw_8bit" if cuda else "adamw_torch_fused",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.shape == "qwen3-8b":
            if not cuda:
                raise SystemExit("--shape qwen3-8b needs a GPU (16 GB of bf16 weights, built on the device)")
            parameters = int(python(BUILD, work / "model", json.dumps(QWEN3_8B)).strip().splitlines()[-1])
            print(f"model: random Qwen3-8B shapes, {parameters / 1e9:.2f} B parameters")
            recipe, overrides = "qwen3-8b", {"model": {"id": str(work / "model")}, "train": train}
        else:
            recipe, overrides = "tiny-demo", {"train": train}
        rows = python(PREPARE, work, recipe, json.dumps(overrides)).strip().splitlines()[-1]
        print(
            f"{recipe}: {rows} training rows, batch {args.batch} x {args.accumulation} accumulation, "
            f"{args.steps} steps, timed after {args.warmup}"
        )
        if args.same_process:
            return same_process(work, args)
        runs: dict[str, list[dict]] = {way: [] for way in args.ways.split(",") + ["unsloth-again"] * args.noise_floor}
        ways = list(runs)
        for repeat in range(
            args.repeats
        ):  # rounds of all ways, each starting one later: a busy machine slows all alike
            for way in ways[repeat % len(ways) :] + ways[: repeat % len(ways)]:
                out = python(MEASURE, way, work, json.dumps({"steps": args.steps, "warmup": args.warmup}))
                r = json.loads(next(line for line in out.splitlines()[::-1] if line.startswith("RESULT "))[7:])
                runs[way].append(r)
                print(
                    f"[{repeat + 1}] {way:12s} {r['s_per_step']:7.3f} s/step ({r['cpu_s_per_step']:.3f} CPU s/step) "
                    f"{r['tokens_per_s']:9.0f} real tokens/s {r['peak_gb']:6.2f} GB {r['memory']}",
                    flush=True,
                )
    results = {
        way: {
            key: statistics.median(r[key] for r in rs)
            for key in ("s_per_step", "cpu_s_per_step", "tokens_per_s", "peak_gb")
        }
        for way, rs in runs.items()
    }
    base = results.get("unsloth")
    for way in ("kit", "transformers", "unsloth-again"):
        if base and way in results:
            r = results[way]
            print(
                f"median ratio {way}/unsloth: s/step {r['s_per_step'] / base['s_per_step']:.3f} "
                f"(CPU time {r['cpu_s_per_step'] / base['cpu_s_per_step']:.3f}), "
                f"tokens/s {r['tokens_per_s'] / base['tokens_per_s']:.3f}, memory {r['peak_gb'] / base['peak_gb']:.2f}"
            )
    if args.repeats > 1 and "unsloth" in runs:  # ratios within each round: a slow spell of the machine hits both
        for way in ("kit", "unsloth-again"):
            if way in runs:
                print(
                    f"per-round s/step {way}/unsloth: "
                    + spread([a["s_per_step"] / b["s_per_step"] for a, b in zip(runs[way], runs["unsloth"])])
                )


if __name__ == "__main__":
    main()
