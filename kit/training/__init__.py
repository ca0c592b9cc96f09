"""Training: QLoRA through Unsloth's FastLanguageModel and TRL's SFTTrainer, its callbacks (metrics,
live samples) and the run's checkpoints."""
