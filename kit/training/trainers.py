"""The kit's trainers, one per ``train.method``: TRL's SFTTrainer and DPOTrainer with what the kit
adds to both (``KitTrainer``)."""
from __future__ import annotations

import json
from pathlib import Path

from kit import backend  # first: Unsloth patches trl/transformers/peft on import

import torch  # noqa: E402
from transformers import TrainerState  # noqa: E402
from transformers.trainer_utils import TrainOutput, get_last_checkpoint  # noqa: E402
from trl import DPOTrainer, SFTTrainer  # noqa: E402


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
        if resume_from_checkpoint and finished_at(Path(resume_from_checkpoint), self.args.max_steps):
            self._load_from_checkpoint(resume_from_checkpoint)
            self.state = TrainerState.load_from_json(str(Path(resume_from_checkpoint) / "trainer_state.json"))
            return TrainOutput(self.state.global_step, None, {"train_runtime": 0.0})
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    resumed_from = None  # the checkpoint the last train() call resumed from
    real_tokens = 0  # this process's real (unpadded) training tokens: a device tensor once counting starts

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step, as Unsloth's loop gets them, with their real
        tokens added up on the device. transformers' own count (include_num_input_tokens_seen) reads
        the sum back after every micro-batch: on a GPU a synchronisation each time, which Unsloth's
        loop does not have. This one is read once, after training."""
        batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
        for batch in batches:
            mask = batch.get("attention_mask")  # absent when padding-free: then every token is real
            self.real_tokens = self.real_tokens + (mask.sum() if mask is not None else batch["input_ids"].numel())
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


def finished_at(checkpoint_dir: Path, max_steps: int | None) -> bool:
    """Whether the checkpoint in ``checkpoint_dir`` is the run's last step: resuming there must train nothing, but
    transformers' loop would run one step past max_steps. ``max_steps`` is the recipe's (it may have
    been raised for the resume); where the run counts epochs instead, the checkpoint's own limit."""
    state = json.loads((checkpoint_dir / "trainer_state.json").read_text(encoding="utf-8"))
    limit = max_steps if max_steps and max_steps > 0 else state.get("max_steps", 0)
    return limit > 0 and state["global_step"] >= limit
