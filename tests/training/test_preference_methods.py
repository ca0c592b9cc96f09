"""KTO and ORPO through TRL's trainers on the kit's tokenized data (the tiny Qwen3; tiny-dpo-demo's
pairs for ORPO, and for KTO the same answers as unpaired labelled completions, one side of each pair):
what each trainer is given and computes is checked against the data and the model itself, then a
short run moves the preference, and (KTO) evaluate reports it for base and tuned."""

import json

import pytest
import torch

from kit.paths import PROJECT_ROOT
from tests.conftest import DTYPES

pytestmark = pytest.mark.slow

SETTINGS = {
    "train": {"max_steps": 6, "eval_steps": 6, "save_steps": 6, "logging_steps": 2},
    "eval": {"num_prompts": 2, "max_new_tokens": 4, "live_samples": 0},
}


def nll(model, examples: list[dict], with_prompt: bool) -> float:
    """The mean negative log-likelihood per token of each example's chosen answer (and, ``with_prompt``,
    of its prompt's tokens after the first too), each example run alone."""
    from kit.inference import answer_logp

    total, tokens = 0.0, 0
    for ex in examples:
        if with_prompt:
            ids = ex["prompt_ids"] + ex["chosen_ids"]
            total += answer_logp(model, ids[:1], ids[1:])
            tokens += len(ids) - 1
        else:
            total += answer_logp(model, ex["prompt_ids"], ex["chosen_ids"])
            tokens += len(ex["chosen_ids"])
    return -total / tokens


@pytest.fixture(scope="module", params=["kto", "orpo"])
def method_run(request, tmp_path_factory):
    """One method's run: what its trainer computes before training, then 6 steps and evaluate."""
    from kit.data.prepare import prepare
    from kit.evaluation import evaluate as E
    from kit.training import train as T

    method = request.param
    settings = {**SETTINGS, "train": {**SETTINGS["train"], "method": method}}
    if method == "kto":  # TRL's unpaired layout: the chosen side of even pairs, the rejected of odd ones
        pairs = [json.loads(line) for line in (PROJECT_ROOT / "data" / "tiny-dpo-demo.jsonl").read_text().splitlines()]
        unpaired = tmp_path_factory.mktemp("data") / "unpaired.jsonl"
        unpaired.write_text(
            "".join(
                json.dumps({"messages": p["rejected" if i % 2 else "chosen"], "label": i % 2 == 0}) + "\n"
                for i, p in enumerate(pairs)
            )
        )
        settings["data"] = {"source": str(unpaired)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
        prepared = prepare("tiny-dpo-demo", settings, run_id=method)
        run = prepared.run
        config = run.config()
        model, tokenizer = T.load_model(config)
        model = T.add_lora(model, config)
        train_dataset, eval_dataset = T.datasets(run, config, tokenizer)
        trainer = T.build_trainer(run, config, model, tokenizer, train_dataset, eval_dataset)
        before = {"dataset": trainer.train_dataset, "kit_examples": train_dataset}
        summary = T.finish(run, trainer, trainer.train())
        report = None
        if method == "kto":  # evaluate's pairs are DPO's (tests/e2e/test_preference_demo.py); here, labelled ones
            del model, trainer
            model, tokenizer, checkpoint = E.load(run, config)
            report = E.evaluate(run, config, model, tokenizer, checkpoint)
    return method, run, prepared.report, before, summary, report


def test_kto_trains_each_labelled_completion_with_its_neighbours_for_kl(method_run):
    method, run, prepared, before, _, _ = method_run
    if method != "kto":
        pytest.skip("KTO's data")
    dataset, batch = before["dataset"], 8  # tiny-dpo-demo's per_device_train_batch_size
    assert prepared.completions == {"desirable": 100, "undesirable": 100}
    assert prepared.sources[0]["format"] == "unpaired"
    rows = [json.loads(line) for line in (run.data_dir / "train.jsonl").read_text().splitlines()]
    assert dataset["label"] == [r["label"] for r in rows] and len(rows) == prepared.split["train"]
    completions, kl = dataset["completion_ids"], dataset["KL_completion_ids"]
    for start in range(0, 2 * batch, batch):  # TRL's rotation within each batch: the previous example's
        assert kl[start] == completions[start + batch - 1]
        assert kl[start + 1 : start + batch] == completions[start : start + batch - 1]


@pytest.fixture(scope="module", params=DTYPES)
def orpo_nll(request, tmp_path_factory):
    """ORPO's supervised term before any training, on four tiny-dpo-demo pairs, with the model computing in
    ``model.dtype`` (each of DTYPES): the kit's and TRL's figures on one padded batch, and the answer's
    and the whole sequence's negative log-likelihood from the model run on each example alone."""
    from kit.data.prepare import prepare
    from kit.training import train as T
    from trl.experimental.orpo import ORPOTrainer

    dtype = request.param
    settings = {**SETTINGS, "train": {**SETTINGS["train"], "method": "orpo"}, "model": {"dtype": dtype}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
        run = prepare("tiny-dpo-demo", settings, run_id=f"orpo-{dtype}").run
        config = run.config()
        model, tokenizer = T.load_model(config)
        model = T.add_lora(model, config)
        train_dataset, eval_dataset = T.datasets(run, config, tokenizer)
        trainer = T.build_trainer(run, config, model, tokenizer, train_dataset, eval_dataset)
        examples = [train_dataset[i] for i in range(4)]
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        with torch.no_grad():
            out = {
                "orpo_nll": float(trainer.concatenated_forward(trainer.model, batch)[4]),
                "trl_nll": float(ORPOTrainer.concatenated_forward(trainer, trainer.model, batch)[4]),
                "answer_nll": nll(trainer.model, examples, with_prompt=False),
                "sequence_nll": nll(trainer.model, examples, with_prompt=True),
                "logits_dtype": trainer.concatenated_forward(trainer.model, batch)[2].dtype,
            }
    assert out["logits_dtype"] == getattr(torch, dtype)  # model.dtype reached the model
    return dtype, out


def test_orpo_supervises_the_chosen_answer_alone(orpo_nll):
    """TRL's ORPO takes the negative log-likelihood of the whole chosen sequence, prompt included; the
    kit's takes the answer's tokens alone, as SFT and the other methods do. Both are checked against
    the model run on each example alone, within what separates the two code paths:
    - float32: batching and padding change the sums' order only: 1e-4 relative;
    - bfloat16: the trainer's loss is a mean of per-token losses taken from bfloat16 logits and
      returned in bfloat16, which holds 8 significant bits: a result rounded once and inputs rounded
      once, two units of bfloat16's epsilon (2^-7) relative, where the reference upcasts the logits.
    TRL's own figure, the prompt's tokens included, would fail the kit's check (float32, where the
    tolerance is far below the prompt's share; in bfloat16 the check above still binds each side)."""
    dtype, losses = orpo_nll
    print(f"\n{dtype}: {losses}")
    relative = 1e-4 if dtype == "float32" else 2 * torch.finfo(torch.bfloat16).eps
    tolerance = relative * losses["answer_nll"]
    assert abs(losses["orpo_nll"] - losses["answer_nll"]) <= tolerance
    assert abs(losses["trl_nll"] - losses["sequence_nll"]) <= relative * losses["sequence_nll"]
    if dtype == "float32":
        assert abs(losses["trl_nll"] - losses["answer_nll"]) > 10 * tolerance


def test_a_short_run_moves_the_preference(method_run):
    method, run, _, _, summary, _ = method_run
    logged = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    margins = [r["rewards/margins"] for r in logged if "rewards/margins" in r]
    assert len(margins) == 3 and margins[-1] > margins[0]  # logging_steps 2: steps 2, 4, 6
    assert summary["global_step"] == 6 and summary["tokens_seen"] > 0
    assert (run.adapter_dir / "adapter_model.safetensors").exists()


def test_evaluate_scores_held_out_labelled_completions_for_base_and_tuned(method_run):
    method, run, prepared, _, _, report = method_run
    if method != "kto":
        pytest.skip("labelled completions: KTO's")
    held_out = [json.loads(line) for line in (run.data_dir / "eval.jsonl").read_text().splitlines()]
    base, tuned = report.base["labelled"], report.tuned["labelled"]
    assert base["completions"] == tuned["completions"] == len(held_out) == prepared.split["eval"]
    assert tuned["margin"] > base["margin"]  # desirable minus undesirable mean log-probability, in nats
    assert "preference" not in report.tuned  # no pairs held out
    assert f"({len(held_out)} held-out completions)" in (run.path / "report.md").read_text()
