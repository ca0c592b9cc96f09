"""The kit's trainers, one per ``train.method``: TRL's SFTTrainer, DPOTrainer, KTOTrainer, (from
``trl.experimental``) ORPOTrainer and GRPOTrainer, with what the kit adds to each (``KitTrainer``). The
preference trainers take the pairs the kit tokenized (each family's template and masks, as for SFT);
GRPO takes prompts the kit rendered (each family's template, as at inference)."""

from __future__ import annotations

import json
from pathlib import Path

from kit import backend  # first: Unsloth patches trl/transformers/peft on import
from kit.inference import unsloth_inference
from kit.methods import Method

import torch  # noqa: E402
from transformers import TrainerState  # noqa: E402
from transformers.trainer_utils import TrainOutput, get_last_checkpoint  # noqa: E402

# The configs are named by the method table (kit.methods) and looked up here by config_class.
from trl import (  # noqa: E402, F401
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    KTOConfig,
    KTOTrainer,
    SFTConfig,
    SFTTrainer,
)
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402, F401

IGNORE_INDEX = -100  # transformers' label of a token without loss


class KitTrainer:
    """What the kit adds to each of TRL's trainers (mixed in before it): resuming in the dtypes
    training ran in (TRL keeps a QLoRA adapter in bfloat16, but PEFT's ``load_adapter`` reads a
    checkpoint's adapter back as float32: a resumed run would continue at another precision and
    drift from the uninterrupted one), a multi-process CPU resume, an exact resume from the last
    step, peak memory from the start of training, and the real token count."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        dtypes = {name: p.dtype for name, p in self.model.named_parameters() if p.requires_grad}
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        # TRL's DPOTrainer keeps a frozen copy of the adapter as "ref", saved in the checkpoint's ref/;
        # given such subfolders, transformers loads them alone and leaves the trained adapter (saved at
        # the checkpoint's top) as it was built: a resumed DPO run would restart from a fresh adapter.
        peft_model = model or self.model
        top = Path(resume_from_checkpoint) / "adapter_model.safetensors"
        if top.is_file() and len(getattr(peft_model, "peft_config", {})) > 1:
            active = peft_model.active_adapter
            peft_model.load_adapter(str(resume_from_checkpoint), active, is_trainable=True)
            peft_model.set_adapter(active)
        for name, p in self.model.named_parameters():  # before the optimizer state is loaded into them
            if name in dtypes and p.dtype != dtypes[name]:
                p.data = p.data.to(dtypes[name])

    def _load_optimizer_and_scheduler(self, checkpoint):
        """transformers loads a multi-process run's optimizer state onto ``args.device``, which for
        processes on a CPU is "cpu:0", a location torch.load does not know: there, onto the CPU."""
        if checkpoint is None or self.args.world_size == 1 or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        optimizer, scheduler = Path(checkpoint) / "optimizer.pt", Path(checkpoint) / "scheduler.pt"
        if optimizer.is_file() and scheduler.is_file():
            self.optimizer.load_state_dict(torch.load(optimizer, map_location="cpu", weights_only=True))
            self.lr_scheduler.load_state_dict(torch.load(scheduler, weights_only=True))

    def train(self, resume_from_checkpoint=None, **kwargs):
        """transformers' train, with this run's peak memory measured from here, and a resume from
        the run's last step (killed after its final checkpoint) restoring that state and training
        nothing: transformers' loop would run one step past max_steps."""
        backend.reset_peak_memory()
        if resume_from_checkpoint is True:  # transformers' "the newest checkpoint in output_dir", resolved here
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        self.resumed_from = resume_from_checkpoint
        if resume_from_checkpoint:
            self._restore_token_counts(Path(resume_from_checkpoint))
        if resume_from_checkpoint and finished_at(Path(resume_from_checkpoint), self.args.max_steps):
            self._load_from_checkpoint(resume_from_checkpoint)
            self.state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / "trainer_state.json"))
            return TrainOutput(self.state.global_step, None, {"train_runtime": 0.0})
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_rng_state(self, output_dir):
        """transformers' RNG state, and beside it this process's token counts at this step (the kit's real
        tokens; TRL's ``num_tokens``, where the trainer keeps one): both restart at 0 in a new process,
        so without them a resumed run's ``tokens_seen`` and logged ``num_tokens`` would count only the
        steps after the resume. Written before trainer_state.json, which completes a checkpoint."""
        super()._save_rng_state(output_dir)
        counts = {
            "real_tokens": int(self.real_tokens),
            "total_train_tokens": getattr(self, "_total_train_tokens", None),
        }
        Path(output_dir, f"kit_tokens_{self.args.process_index}.json").write_text(json.dumps(counts), encoding="utf-8")

    def _restore_token_counts(self, checkpoint: Path) -> None:
        """The counts ``_save_rng_state`` wrote (a checkpoint written before they were: counting restarts)."""
        path = checkpoint / f"kit_tokens_{self.args.process_index}.json"
        if not path.is_file():
            return
        counts = json.loads(path.read_text(encoding="utf-8"))
        self.real_tokens = counts["real_tokens"]
        if counts.get("total_train_tokens") is not None and hasattr(self, "_total_train_tokens"):
            self._total_train_tokens = counts["total_train_tokens"]

    resumed_from = None  # the checkpoint the last train() call resumed from
    real_tokens = 0  # this process's real (unpadded) training tokens: a device tensor once counting starts

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step, as Unsloth's loop gets them, with their real
        tokens added up on the device. transformers' own count (include_num_input_tokens_seen) reads
        the sum back after every micro-batch: on a GPU a synchronisation each time, which Unsloth's
        loop does not have. This one is read once, after training."""
        batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
        for batch in batches:
            self.real_tokens = self.real_tokens + real_tokens(batch)
        return batches, count


class KitSFTTrainer(KitTrainer, SFTTrainer):
    """TRL's SFTTrainer with the kit's additions, and its evaluation loss normalised as in training."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """TRL's evaluation step asks for the loss without ``num_items_in_batch``; on a GPU, Unsloth's
        loss then warns that accumulation lost its normalisation. Passing the batch's supervised-token
        count gives the same per-token mean, and Unsloth's normalisation throughout."""
        if not prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        count = self._get_num_items_in_batch([inputs], self.args.device)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=count)
        return loss.detach(), None, None


class KitDPOTrainer(KitTrainer, DPOTrainer):
    """TRL's DPOTrainer with the kit's additions, on pairs the kit tokenized (``prompt_ids``,
    ``chosen_ids``, ``rejected_ids``: each family's template and masks, as for SFT). TRL would
    tokenize them again through ``apply_chat_template``; such a dataset is taken as it is."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names or ()):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


class KitKTOTrainer(KitTrainer, KTOTrainer):
    """TRL's KTOTrainer with the kit's additions, on labelled completions the kit tokenized
    (``prompt_ids``, ``completion_ids``, ``label``; a pair unpaired into two). TRL's own preparation
    would tokenize them again; here only its KL completions are added: each example's neighbour's
    completion within a batch (TRL's rotation), for the KL estimate of the ``kto`` loss."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not {"prompt_ids", "completion_ids", "label"} <= set(dataset.column_names or ()):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL:
            return dataset

        def rotate(batch):
            return {"KL_completion_ids": batch["completion_ids"][-1:] + batch["completion_ids"][:-1]}

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


class KitORPOTrainer(KitTrainer, ORPOTrainer):
    """TRL's (experimental) ORPOTrainer with the kit's additions, on pairs the kit tokenized, and its
    supervised term on the chosen answer's tokens only: TRL's ORPO takes the negative log-likelihood
    of the whole chosen sequence, prompt included, where every other method of the kit (SFT
    included) trains the answer alone."""

    def tokenize_row(self, feature, model=None):
        """A kit pair (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) as ORPO's columns: each side's
        whole sequence, its attention mask, and labels that leave the prompt out."""
        if "chosen_ids" not in feature:
            return super().tokenize_row(feature, model)
        prompt = feature["prompt_ids"]
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            answer = feature[f"{side}_ids"]
            row |= {
                f"{side}_input_ids": prompt + answer,
                f"{side}_attention_mask": [1] * (len(prompt) + len(answer)),
                f"{side}_labels": [IGNORE_INDEX] * len(prompt) + answer,
            }
        return row

    def concatenated_forward(self, model, batch):
        """TRL's forward, its chosen negative log-likelihood replaced by the answer tokens' mean (the
        labels ``tokenize_row`` wrote), from the same logits."""
        out = super().concatenated_forward(model, batch)
        chosen_logits = out[2]  # the logits that predict tokens 1.., of the chosen sequences
        labels = batch["chosen_labels"][:, 1:].to(chosen_logits.device)
        width = chosen_logits.shape[1]
        labels = torch.nn.functional.pad(labels, (0, width - labels.shape[1]), value=IGNORE_INDEX)[:, :width]
        nll = torch.nn.functional.cross_entropy(
            chosen_logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
        )
        return (*out[:4], nll, *out[5:])


class KitGRPOTrainer(KitTrainer, GRPOTrainer):
    """TRL's GRPOTrainer with the kit's additions, on prompts the kit rendered as text (``prompt``: each
    family's template, tools and thinking switch, exactly as evaluate and the chat prompt the model;
    ``kit.data.tokenize.grpo_rows``). TRL would tokenize text prompts with the tokenizer's special
    tokens added (where the tokenizer adds a BOS, as the Hub's Llama 3.1 and Gemma 3 do, a second one
    before the template's own); here they are tokenized as rendered. ``stop_ids``: the family's end-of-turn tokens, where sampled answers stop. Real tokens
    are counted per generation batch: its prompts and answers."""

    def __init__(self, *args, stop_ids: list[int] = (), **kwargs):
        model = kwargs["model"]
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        model.generation_config.eos_token_id = eos + [i for i in stop_ids if i not in eos]  # read by TRL's init
        super().__init__(*args, **kwargs)

    def _tokenize_prompts(self, prompts: list):
        if not prompts or not isinstance(prompts[0], str):
            return super()._tokenize_prompts(prompts)
        return self.processing_class(text=prompts, add_special_tokens=False)["input_ids"], None, {}

    def _generate_single_turn(self, *args, **kwargs):
        """TRL's sampling, in Unsloth's inference mode (``unsloth_inference``): the model trains with its
        KV cache off, and sampling without one recomputes every sequence at every token (measured on
        SmolLM2, 8 answers of 32 tokens: 35 s a step on this CPU)."""
        with unsloth_inference(self.model):
            return super()._generate_single_turn(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.real_tokens = self.real_tokens + out["prompt_mask"].sum() + out["completion_mask"].sum()
        return out


def trainer_class_of(method: Method) -> type:
    """The kit's trainer the method table names (``Method.trainer``: a class of this module)."""
    return globals()[method.trainer]


def config_class(method: Method) -> type:
    """TRL's config class the method table names (``Method.config``: imported by this module)."""
    return globals()[method.config]


def real_tokens(batch):
    """The real (unpadded) tokens of one collated batch: its attention mask's, or (ORPO's columns) its
    chosen and rejected sequences'; without a mask (padding-free), every token. A GRPO batch (rows,
    not yet generated) counts none here: ``KitGRPOTrainer`` counts them once generated."""
    if not isinstance(batch, dict):
        return 0
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    if "chosen_attention_mask" in batch:
        return batch["chosen_attention_mask"].sum() + batch["rejected_attention_mask"].sum()
    return batch["input_ids"].numel()


def finished_at(checkpoint_dir: Path, max_steps: int | None) -> bool:
    """Whether the checkpoint in ``checkpoint_dir`` is the run's last step: resuming there must train nothing, but
    transformers' loop would run one step past max_steps. ``max_steps`` is the recipe's (it may have
    been raised for the resume); where the run counts epochs instead, the checkpoint's own limit."""
    state = json.loads((checkpoint_dir / "trainer_state.json").read_text(encoding="utf-8"))
    limit = max_steps if max_steps and max_steps > 0 else state.get("max_steps", 0)
    return limit > 0 and state["global_step"] >= limit
