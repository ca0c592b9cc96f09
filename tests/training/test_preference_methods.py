"""KTO and ORPO through TRL's trainers on the kit's tokenized data (the tiny Qwen3, tiny-dpo-demo's
pairs): what each trainer is given and computes is checked against the data and the model itself,
then a short run moves the preference and evaluate reports it for base and tuned."""
import json

import pytest
import torch

pytestmark = pytest.mark.slow

SETTINGS = {"train": {"max_steps": 6, "eval_steps": 6, "save_steps": 6, "logging_steps": 2},
            "eval": {"num_prompts": 2, "max_new_tokens": 4, "live_samples": 0}}


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
    from trl.experimental.orpo import ORPOTrainer

    method = request.param
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KIT_RUNS_DIR", str(tmp_path_factory.mktemp("runs")))
        prepared = prepare("tiny-dpo-demo", {**SETTINGS, "train": {**SETTINGS["train"], "method": method}},
                           run_id=method)
        run = prepared.run
        config = run.recipe()
        model, tokenizer = T.load_model(config)
        model = T.add_lora(model, config)
        train_dataset, eval_dataset = T.datasets(run, config, tokenizer)
        trainer = T.build_trainer(run, config, model, tokenizer, train_dataset, eval_dataset)
        before = {"dataset": trainer.train_dataset, "kit_examples": train_dataset}
        if method == "orpo":
            examples = [train_dataset[i] for i in range(4)]
            batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
            with torch.no_grad():
                before["orpo_nll"] = float(trainer.concatenated_forward(trainer.model, batch)[4])
                before["trl_nll"] = float(ORPOTrainer.concatenated_forward(trainer, trainer.model, batch)[4])
                before["answer_nll"] = nll(trainer.model, examples, with_prompt=False)
                before["sequence_nll"] = nll(trainer.model, examples, with_prompt=True)
        summary = T.finish(run, trainer, trainer.train())
        del model, trainer
        model, tokenizer, checkpoint = E.load(run, config)
        report = E.evaluate(run, config, model, tokenizer, checkpoint)
    return method, run, prepared.report, before, summary, report


def test_kto_trains_on_both_answers_of_each_pair_with_its_neighbour_for_kl(method_run):
    method, run, prepared, before, _, _ = method_run
    if method != "kto":
        pytest.skip("KTO's data")
    dataset, batch = before["dataset"], 8  # tiny-dpo-demo's per_device_train_batch_size
    assert prepared["completions"] == {"desirable": 200, "undesirable": 200}  # 200 pairs, unpaired
    assert len(dataset) == 2 * prepared["split"]["train"]
    assert dataset["label"][:4] == [True, False, True, False]
    completions, kl = dataset["completion_ids"], dataset["KL_completion_ids"]
    for start in range(0, 2 * batch, batch):  # TRL's rotation within each batch: the previous example's
        assert kl[start] == completions[start + batch - 1]
        assert kl[start + 1:start + batch] == completions[start:start + batch - 1]


def test_orpo_supervises_the_chosen_answer_alone(method_run):
    """TRL's ORPO takes the negative log-likelihood of the whole chosen sequence, prompt included; the
    kit's takes the answer's tokens alone, as SFT and the other methods do. Both checked against the
    model run on each example alone (1e-4 relative: batching and padding change the sums' order only);
    TRL's own figure, the prompt's tokens included, would fail the kit's check."""
    method, _, _, before, _, _ = method_run
    if method != "orpo":
        pytest.skip("ORPO's loss")
    tolerance = 1e-4 * before["answer_nll"]
    assert abs(before["orpo_nll"] - before["answer_nll"]) <= tolerance
    assert abs(before["trl_nll"] - before["sequence_nll"]) <= tolerance
    assert abs(before["trl_nll"] - before["answer_nll"]) > 10 * tolerance


def test_a_short_run_moves_the_preference_and_evaluate_reports_it(method_run):
    method, run, _, _, summary, report = method_run
    logged = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    margins = [r["rewards/margins"] for r in logged if "rewards/margins" in r]
    assert len(margins) == 3 and margins[-1] > margins[0]  # logging_steps 2: steps 2, 4, 6
    assert summary["global_step"] == 6 and summary["tokens_seen"] > 0
    base, tuned = report["base"]["preference"], report["tuned"]["preference"]
    assert report["method"] == method and base["pairs"] == tuned["pairs"] == 20
    assert tuned["margin"] > base["margin"] and tuned["accuracy"] >= base["accuracy"]
    assert "reward accuracy (20 held-out pairs)" in (run.path / "report.md").read_text()
    assert (run.adapter_dir / "adapter_model.safetensors").exists()
