"""Evaluation on the demo run that the notebooks produced, re-checked in this process with the
real model: perplexity, batch generation, live samples, checkpoints, the chat loop."""

import json
import math

import pytest
import torch

from kit.recipes import apply_overrides
from tests.near_ties import check_against_one_by_one, one_by_one

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(demo_run):
    from kit.evaluation import evaluate as E  # imports Unsloth
    from kit.runs import Run

    run = Run(demo_run[0])
    recipe = run.config()
    model, tokenizer, checkpoint = E.load(run, recipe, "final")
    return run, recipe, model, tokenizer, checkpoint


def independent_mean_token_loss(model, tokenizer, rows):
    """-log p(token) over assistant tokens, from the logits with log_softmax + gather."""
    from kit.chat.render import IGNORE_INDEX, tokenize_with_labels
    from kit.families import get_family

    nll, n = 0.0, 0
    for row in rows:
        ex = tokenize_with_labels(tokenizer, get_family("qwen3"), row["messages"])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0].double()
        logp = torch.log_softmax(logits[:-1], dim=-1)
        for pos, label in enumerate(ex["labels"][1:]):
            if label != IGNORE_INDEX:
                nll -= float(logp[pos, label])
                n += 1
    return nll / n


def test_reported_perplexity_is_exp_of_mean_token_loss(loaded):
    from kit.files import read_jsonl

    run, _, model, tokenizer, _ = loaded
    report = json.loads((run.path / "report.json").read_text())
    rows = read_jsonl(run.data_dir / "eval.jsonl")
    tuned = independent_mean_token_loss(model, tokenizer, rows)
    with model.disable_adapter():
        base = independent_mean_token_loss(model, tokenizer, rows)
    assert report["tuned"]["eval_loss"] == pytest.approx(tuned, rel=2e-3)
    assert report["base"]["eval_loss"] == pytest.approx(base, rel=2e-3)
    for name in ("base", "tuned"):
        assert report[name]["perplexity"] == pytest.approx(math.exp(report[name]["eval_loss"]), rel=1e-9)


def test_batch_predictions_equal_one_by_one_greedy(loaded):
    """evaluate's batch predictions are the model's greedy answers: the same batched generation, rerun
    here with the batch size evaluate recorded, gives the same answers (same code, inputs and shapes),
    and each equals the one-by-one greedy answer up to a near-tie (tests/near_ties.py: batching and
    padding change logits by rounding only, which on a random model's near-uniform logits can flip a
    token in bfloat16). Answers handed back out of order fail the rule."""
    from kit.families import get_family
    from kit.inference import generate

    run, recipe, model, tokenizer, _ = loaded
    family = get_family("qwen3")
    predictions = [
        json.loads(line) for line in (run.path / "predictions" / "eval.final.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == 20 and all(p["answer"] and p["reference"] for p in predictions)
    report = json.loads((run.path / "report.json").read_text())
    assert [e["tuned"] for e in report["examples"]] == [p["answer"] for p in predictions][: len(report["examples"])]
    convs, max_new = [p["messages"] for p in predictions], recipe.eval.max_new_tokens
    batched, _ = generate(
        model,
        tokenizer,
        family,
        convs,
        max_new_tokens=max_new,
        thinking=recipe.eval.thinking,
        batch_size=report["tuned"]["generation"]["batch_size"],
    )
    assert [p["answer"] for p in predictions] == [a.text for a in batched]
    reference = one_by_one(model, tokenizer, family, convs, max_new, recipe.eval.thinking)
    ids = [a.ids for a in batched]
    assert check_against_one_by_one(ids, reference) >= len(convs)  # the comparison decided something
    with pytest.raises(AssertionError, match="answer differs"):
        check_against_one_by_one(ids[1:] + ids[:1], reference)


def test_report_has_scores_tables_and_plots(demo_run):
    run, _ = demo_run
    report = json.loads((run / "report.json").read_text())
    for name in ("base", "tuned"):
        assert {"bleu", "rouge_l", "exact_match", "mean_answer_tokens", "checkpoint", "behavior"} <= set(report[name])
    assert report["tuned"]["rouge_l"] > report["base"]["rouge_l"] + 0.2
    assert report["tuned"]["bleu"] > report["base"]["bleu"] + 10
    assert report["tuned"]["checkpoint"] == "final" and report["checkpoint"]["step"] == 200
    assert {"prompt", "base", "tuned", "reference"} <= set(report["examples"][0])
    md = (run / "report.md").read_text()
    assert "![base vs tuned](metrics.png)" in md and "| ROUGE-L |" in md
    assert report["model_id"] == "builtin:tiny-qwen3" and "random weights" in md and "gibberish" in md
    assert (run / "metrics.png").stat().st_size > 10_000


def test_live_samples_logged_at_every_evaluation(demo_run):
    run, _ = demo_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    eval_steps = [r["step"] for r in records if "eval_loss" in r]
    sample_steps = [r["step"] for r in records if "samples" in r]
    assert sample_steps == eval_steps == [50, 100, 150, 200]  # the final evaluation logged and sampled once
    assert all(len(r["samples"]) == 3 and all(s["answer"] for s in r["samples"]) for r in records if "samples" in r)
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event_file in events:
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        tags |= set(acc.Tags().get("tensors", []))
    assert any(t.startswith("samples") for t in tags)


def test_named_checkpoint_is_evaluated_and_unknown_one_listed(loaded):
    from kit.evaluation import evaluate as E
    from kit.runs import RunError

    run, recipe, *_ = loaded
    _, _, checkpoint = E.load(run, recipe, "checkpoint-100")
    assert checkpoint.step == 100 and checkpoint.eval_loss is not None
    with pytest.raises(RunError, match="no checkpoint 'checkpoint-7'.*checkpoint-100, checkpoint-200, final"):
        E.load(run, recipe, "checkpoint-7")


def test_chat_streams_answers_and_skips_without_input(loaded, capsys):
    from kit.families import get_family
    from kit.inference import chat, generate

    run, recipe, model, tokenizer, _ = loaded
    family = get_family("qwen3")
    questions = iter(["Can I return my drone?", "quit"])
    conversation = chat(model, tokenizer, family, max_new_tokens=24, input_fn=lambda _: next(questions))
    expected, _ = generate(
        model, tokenizer, family, [[{"role": "user", "content": "Can I return my drone?"}]], max_new_tokens=24
    )
    assert conversation[-1] == {"role": "assistant", "content": expected[0].text}
    assert "tuned> " + expected[0].text in capsys.readouterr().out

    def no_stdin(_):
        raise EOFError

    assert chat(model, tokenizer, family, input_fn=no_stdin) == []
    assert "Chat skipped" in capsys.readouterr().out
    import nbformat

    nb = nbformat.read(run.notebooks_dir / "evaluate.ipynb", as_version=4)
    assert "Chat skipped" in "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_report_says_when_the_model_is_the_random_demo_model():
    from kit.demos.tiny import BUILTIN_ID
    from kit.models import model_note

    assert "gibberish" in model_note(BUILTIN_ID) and "behaviour and tool-call metrics" in model_note(BUILTIN_ID)
    assert model_note("unsloth/Qwen3-8B-unsloth-bnb-4bit") == ""


def test_evaluating_again_keeps_the_earlier_report(loaded, tmp_path):
    import shutil

    from kit.evaluation import evaluate as E
    from kit.runs import Run

    run, recipe, model, tokenizer, checkpoint = loaded
    again = Run(shutil.copytree(run.path, tmp_path / "again"))  # the session's demo run stays as it is
    earlier = {name: (again.path / name).read_bytes() for name in ("report.json", "report.md")}
    E.evaluate(again, apply_overrides(recipe, {"eval.num_prompts": 2}), model, tokenizer, checkpoint)
    for name, content in earlier.items():
        stem, suffix = name.split(".")
        kept = list(again.path.glob(f"{stem}.replaced-*.{suffix}"))
        assert len(kept) == 1 and kept[0].read_bytes() == content
    assert len(json.loads((again.path / "report.json").read_text())["examples"]) == 2
