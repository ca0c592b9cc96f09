"""train: the train stage in the steps Unsloth's notebooks take, each a function the train notebook
calls in its own cell (so ``model``, ``tokenizer`` and ``trainer`` are the user's to inspect):

    plan = start(run, resume)                         # before any model loads: refusals, the resume point, the lock
    model, tokenizer = load_model(config)             # Unsloth FastLanguageModel (4-bit per recipe)
    model = add_lora(model, config)
    train_dataset, eval_dataset = datasets(run, config, tokenizer)   # assistant-only labels (or pairs)
    trainer = build_trainer(run, config, model, tokenizer, train_dataset, eval_dataset)  # SFTTrainer, DPOTrainer ...
    result = trainer.train(resume_from_checkpoint=plan.resume_from)
    summary = finish(run, trainer, result, plan)      # final eval, adapter/, manifest

The same steps train every ``train.method`` (``kit.training.trainers``: sft, dpo, kto, orpo, grpo).
``train`` runs exactly these steps (papermill's pipeline, tests, benchmarks). ``config`` is the run's
resolved recipe (``kit.recipes.Recipe``); ``recipe`` elsewhere is its name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kit import backend  # first: Unsloth patches trl/transformers/peft on import
from kit import distributed
from kit.backend import FastLanguageModel
from kit.training.callbacks import CheckpointTimes, LiveSamples, MetricsJsonl, readable_progress_tables
from kit.training.plan import Plan, refuse_trained, start  # start: the notebook's first step
from kit.data.prompts import Prompt, held_out_prompts
from kit.files import read_jsonl
from kit.families import ensure_chat_template, family_for
from kit.data.tokenize import grpo_rows, tokenize_for
from kit.inference import stop_ids
from kit.methods import method_of
from kit.rewards import reward_functions
from kit.runs import Run, RunError, find_adapter
from kit.recipes import Recipe

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from kit.training.trainers import KitTrainer, config_class, trainer_class_of  # noqa: E402


def load_model(config: Recipe):
    """The base model and its tokenizer through Unsloth's FastLanguageModel (4-bit where
    ``model.load_in_4bit``, in ``model.dtype``), the tokenizer with the family's chat template."""
    m = config.model
    model, tokenizer = backend.load_model(m.id, m.max_seq_length, m.load_in_4bit, m.dtype)
    return model, ensure_chat_template(tokenizer, family_for(config))


def add_lora(model, config: Recipe):
    """Unsloth's LoRA adapters on the recipe's target modules (``lora.*``); A is seeded, B starts at zero,
    or with ``train.init_adapter`` both are an earlier run's adapter (``init_adapter``)."""
    lora = config.lora
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_gradient_checkpointing=lora.use_gradient_checkpointing,
        use_rslora=lora.use_rslora,
        random_state=config.train.seed,
    )
    if config.train.init_adapter:
        init_adapter(model, config)
    return model


def init_adapter(model, config: Recipe) -> Path:
    """The LoRA weights of the adapter ``train.init_adapter`` names (``kit.runs.find_adapter``: checked
    to fit the recipe), loaded into the fresh adapter Unsloth just made, so training goes through
    Unsloth's own PEFT set-up as always and continues that adapter (SFT, then DPO). Every LoRA weight
    must be loaded. For DPO and KTO, TRL then copies it as the frozen reference: the preference is
    measured against the earlier run's model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter, _ = find_adapter(config)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    loaded = set_peft_model_state_dict(model, weights)
    expected = [name for name, _ in model.named_parameters() if "lora_" in name]
    if loaded.unexpected_keys or len(weights) != len(expected):
        raise RunError(
            f"train.init_adapter: {adapter} does not fit this model: {len(weights)} LoRA tensors for "
            f"{len(expected)} (unexpected: {list(loaded.unexpected_keys)[:3]})"
        )
    print(f"LoRA adapters start from {adapter} ({len(weights)} tensors).")
    return adapter


def tokenized_split(run: Run, name: str, tokenizer, config: Recipe) -> Dataset:
    rows = read_jsonl(run.data_dir / f"{name}.jsonl")
    family, method = family_for(config), method_of(config)
    if method.examples == "prompts":  # generated and scored while training: the prompts alone
        return Dataset.from_list(grpo_rows(tokenizer, family, rows, config))
    tokenized = tokenize_for(method, tokenizer, family, rows, config)
    if tokenized.dropped:  # prepare already applied the same rules; a difference means the data changed
        raise RunError(
            f"{run.data_dir / (name + '.jsonl')}: {len(tokenized.dropped)} rows no longer tokenize as in "
            f"prepare: {tokenized.dropped[:3]}"
        )
    return Dataset.from_list(tokenized.examples)


def datasets(run: Run, config: Recipe, tokenizer) -> tuple[Dataset, Dataset]:
    """The run's train and eval splits (prepared as JSONL), tokenized with assistant-only labels
    (preference pairs: prompt, chosen and rejected ids; GRPO: rendered prompts, ``grpo_rows``)."""
    return tokenized_split(run, "train", tokenizer, config), tokenized_split(run, "eval", tokenizer, config)


def held_out_prompt(run: Run) -> Prompt:
    """The first held-out conversation up to its first trained answer: the train notebook's quick
    try, before and after training."""
    return held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), 1)[0]


def live_samples(run: Run, tokenizer, config: Recipe) -> LiveSamples:
    """Answers to the first ``eval.live_samples`` held-out prompts at every evaluation."""
    held_out = held_out_prompts(read_jsonl(run.data_dir / "eval.jsonl"), config.eval.live_samples)
    return LiveSamples(
        run.metrics_path,
        run.path / "tensorboard",
        tokenizer,
        family_for(config),
        [p.messages for p in held_out],
        config.eval.max_new_tokens,
        tools=[p.tools for p in held_out],
    )


def trainer_config(run: Run, config: Recipe, **extra):
    """TRL's config for ``train.method`` (SFTConfig, DPOConfig, KTOConfig, ORPOConfig, GRPOConfig) from
    the recipe's ``train`` section (its fields are the config's, passed through; the method's section's
    too) and ``extra`` config fields a recipe does not hold (tests and benchmarks)."""
    method = method_of(config)
    train = {**dict(method.config_defaults), **config.train.trainer_args(), **extra}
    train["optim"] = train["optim"] or backend.default_optim()
    if method.rewards:
        train["reward_weights"] = reward_functions(config.train.grpo.rewards, family_for(config))[1]
    if method.max_length:  # GRPO samples answers of its own length; prepare bounded the prompts
        train["max_length"] = config.model.max_seq_length
    return config_class(method)(
        output_dir=str(run.checkpoints_dir),
        eval_strategy="steps",
        save_strategy="steps",
        report_to=["tensorboard"],
        **backend.precision_flags(),
        **backend.ddp_flags(),
        **train,
    )


def final_evaluation(trainer) -> dict:
    """The evaluation at the last step: the one training just logged when its last step was an
    evaluation step (not run, logged and sampled a second time), else a new one."""
    step = trainer.state.global_step
    logged = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    return logged[-1] if logged else trainer.evaluate()


def mean_train_loss(metrics_path: Path) -> float | None:
    """The run's training loss over all its steps, from metrics.jsonl: each logged loss (a mean
    over the steps since the previous log) weighted by its steps. transformers' own figure covers
    only the steps of the last process, divided by all steps, when a run was resumed."""
    losses = {}
    for line in metrics_path.read_text(encoding="utf-8").splitlines() if metrics_path.exists() else []:
        record = json.loads(line)
        if "loss" in record:
            losses[record["step"]] = record["loss"]  # a step logged twice: the later record
    total, previous, weighted = 0, 0, 0.0
    for step in sorted(losses):
        weighted += losses[step] * (step - previous)
        total += step - previous
        previous = step
    return weighted / total if total else None


def checkpoint_save_seconds(metrics_path: Path) -> float:
    """Seconds spent writing the run's checkpoints (callbacks.CheckpointTimes), all processes together."""
    records = map(json.loads, metrics_path.read_text(encoding="utf-8").splitlines()) if metrics_path.exists() else []
    return round(sum(r.get("checkpoint_save_s", 0.0) for r in records), 2)


def telemetry(trainer, model, result, tokens: int) -> dict:
    """How fast and how big: real (unpadded) tokens per second of training (``tokens``: all
    processes'), peak memory of this process, trainable and total parameters, and on a GPU an MFU
    estimate (per GPU)."""
    seconds = result.metrics.get("train_runtime") or 0
    tokens_per_s = tokens / seconds if seconds else None
    trainable, total = model.get_nb_trainable_parameters()  # PEFT counts 4-bit weights unpacked
    per_device = tokens_per_s / trainer.args.world_size if tokens_per_s else None
    return {
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
        "trainable_parameters": trainable,
        "parameters": total,
        "mfu": backend.mfu(total, per_device) if per_device else None,
        **backend.peak_memory(),
    }


def real_tokens_of_all_processes(trainer) -> int:
    """The real tokens every process trained on (a collective: every process calls it)."""
    count = torch.as_tensor(trainer.real_tokens, device=trainer.args.device).detach().clone().to(torch.int64)
    if trainer.args.world_size > 1:
        torch.distributed.all_reduce(count)
    return int(count)


def launch(trainer) -> dict:
    """How many processes trained and the global batch: per-device batch × accumulation × processes."""
    args = trainer.args
    return {
        "world_size": args.world_size,
        "global_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
    }


def method_arguments(config: Recipe, tokenizer) -> dict:
    """What a method's trainer takes beside the common arguments: GRPO's reward functions
    (``train.grpo.rewards``, checked) and the family's end-of-turn tokens, where its answers stop."""
    if not method_of(config).rewards:
        return {}
    family = family_for(config)
    return {
        "reward_funcs": reward_functions(config.train.grpo.rewards, family)[0],
        "stop_ids": stop_ids(tokenizer, family),
    }


def build_trainer(
    run: Run,
    config: Recipe,
    model,
    tokenizer,
    train_dataset: Dataset | None = None,
    eval_dataset: Dataset | None = None,
    trainer_class: type | None = None,
) -> KitTrainer:
    """The kit's trainer for ``run`` and its ``train.method`` (TRL's SFTTrainer, DPOTrainer, KTOTrainer,
    ORPOTrainer or GRPOTrainer; for DPO and KTO the reference model is the base, as the adapter starts:
    TRL keeps a frozen copy of it; GRPO's rewards: ``method_arguments``): the tokenized
    splits (``datasets`` when not given), the recipe's config, and the callbacks that write
    metrics.jsonl, TensorBoard and live samples. ``trainer_class``: a subclass of the method's trainer
    to build instead (tests, benchmarks)."""
    if train_dataset is None or eval_dataset is None:
        train_dataset, eval_dataset = datasets(run, config, tokenizer)
    # transformers 5 reads the TensorBoard directory from the environment when the trainer is built.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.path / "tensorboard")
    readable_progress_tables()
    trainer = (trainer_class or trainer_class_of(method_of(config)))(
        model=model,
        processing_class=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        args=trainer_config(run, config),
        callbacks=[
            MetricsJsonl(run.metrics_path),
            live_samples(run, tokenizer, config),
            CheckpointTimes(run.metrics_path),
        ],
        **method_arguments(config, tokenizer),
    )
    distributed.check_same_devices(backend.HAS_GPU)  # the process group exists once the trainer does
    return trainer


def finish(run: Run, trainer: KitTrainer, result, plan: Plan | None = None) -> dict:
    """After ``trainer.train``: the evaluation at the last step, the adapter (and tokenizer) written
    to ``adapter/`` under a temporary name and renamed (never half-written), the run's summary
    recorded in manifest.json, and the run's lock released. Returns the summary; for a run that was
    already trained (``plan.action == "trained"``), the summary recorded then, and nothing is written."""
    if plan is not None and plan.action == "trained":
        return run.manifest().get("train", {})
    if distributed.is_main():
        refuse_trained(run)  # the notebook's cells run again after a finished run
    final_eval = final_evaluation(trainer)  # every process: an evaluation is a collective step
    tokens = real_tokens_of_all_processes(trainer)
    if not distributed.is_main():  # rank 0 alone writes the adapter and the records
        return {"global_step": result.global_step, "eval_loss": final_eval.get("eval_loss"), **launch(trainer)}
    model, tokenizer = trainer.model, trainer.processing_class
    tmp = run.path / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=[model.active_adapter])  # not DPO's frozen "ref" copy
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(run.adapter_dir)
    summary = {
        "global_step": result.global_step,
        "train_loss": mean_train_loss(run.metrics_path),
        "eval_loss": final_eval.get("eval_loss"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "resumed_from": trainer.resumed_from,
        "checkpoint_save_s": checkpoint_save_seconds(run.metrics_path),
        **launch(trainer),
        **telemetry(trainer, model, result, tokens),
    }
    run.update_manifest({"device": backend.device_name(), "train": summary})
    if plan is not None and plan.lock is not None:
        plan.lock.release()
    return summary


def record_stage(run: Run, plan: Plan, started: float) -> None:
    """The stage's wall time in the manifest, unless the run was already trained (left as it is)."""
    if plan.action != "trained":
        run.record_stage("train", started)


def train(run: Run, config: Recipe, resume: bool | str = "auto", trainer_class: type | None = None) -> dict:
    """The whole stage in one call, exactly the train notebook's steps in order. ``resume``: see
    ``start``; ``trainer_class``: see ``build_trainer``. Returns the summary."""
    plan = start(run, resume)
    try:
        model, tokenizer = load_model(config)
        model = add_lora(model, config)
        train_dataset, eval_dataset = datasets(run, config, tokenizer)
        trainer = build_trainer(run, config, model, tokenizer, train_dataset, eval_dataset, trainer_class)
        result = trainer.train(resume_from_checkpoint=plan.resume_from)
        return finish(run, trainer, result, plan)
    finally:
        if plan.lock is not None:
            plan.lock.release()
