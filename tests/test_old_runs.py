"""A run written before the method table and the typed records (the kit at 52b8f38: a tiny-demo run,
prepared, trained 4 steps and evaluated; tests/fixtures/run-52b8f38) reads back unchanged, and the
current kit evaluates and merges it.

The fixture keeps the run's records, data and adapter. Left out, and put back by the test: the
adapter's tokenizer.json, byte-identical to the tiny model's (11 MB), and the absolute path of the
base model, which names the machine that trained it."""

import json
import shutil

import pytest

from kit.paths import PROJECT_ROOT

FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "run-52b8f38"


def read(name: str) -> dict:
    return json.loads((FIXTURE / name).read_text())


def test_records_read_back_with_their_keys():
    from kit.data.prepare import PrepareReport, summary
    from kit.evaluation.evaluate import EvalReport

    prepared = read("prepare_report.json")
    assert PrepareReport.from_dict(prepared).to_dict() == prepared
    assert "kept 200, dropped 0" in summary(PrepareReport.from_dict(prepared))
    report = read("report.json")
    typed = EvalReport.from_dict(report)
    assert typed.to_dict() == report
    assert typed.manifest_summary() == read("manifest.json")["evaluate"]  # the manifest as evaluate wrote it then


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, tiny_model_dir):
    from kit.runs import Run

    root = tmp_path_factory.mktemp("old") / "runs"
    path = root / "tiny-demo" / FIXTURE.name
    shutil.copytree(FIXTURE, path)
    shutil.copy(tiny_model_dir / "tokenizer.json", path / "adapter" / "tokenizer.json")
    config = json.loads((path / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (path / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return Run(path)


@pytest.mark.slow
def test_the_current_kit_evaluates_and_merges_an_old_run(old_run):
    from kit.evaluation import evaluate as E
    from kit.export.merge import merge

    before = read("report.json")
    config = old_run.config()
    model, tokenizer, checkpoint = E.load(old_run, config)
    report = E.evaluate(old_run, config, model, tokenizer, checkpoint)
    new = report.to_dict()
    assert set(new) == set(before) and new["method"] == "sft" and new["checkpoint"] == before["checkpoint"]
    for name in ("base", "tuned"):
        assert set(before[name]) <= set(new[name])
    [kept] = old_run.path.glob("report.replaced-*.json")  # the old report is kept beside the new one
    assert json.loads(kept.read_text()) == before
    del model
    merged = merge(old_run, old_run.apply_overrides({"export": {"gguf": ["q8_0"]}}, stage="merge"))
    assert merged.ok and (old_run.merged_dir / "config.json").exists()
    assert set(merged.gguf) == {"q8_0"} and (old_run.path / "merge_report.json").exists()
