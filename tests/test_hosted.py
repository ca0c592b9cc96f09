"""Hosted runtimes without a notebook server: the runs root (Kaggle's default, Drive only on Colab,
a folder that cannot be written) and the install cell's refusals, run as the real cell text."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit import paths
from kit.paths import RunsRootError, runs_root, use_runs_root

sys.path.insert(0, str(paths.PROJECT_ROOT / "scripts"))
from notebook_cells import shared_cells  # noqa: E402


@pytest.fixture
def plain_env(monkeypatch):
    monkeypatch.delenv("KIT_RUNS_DIR", raising=False)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)


def test_the_runs_root_defaults_to_kaggles_output_folder_on_kaggle(plain_env, monkeypatch, tmp_path):
    assert runs_root() == paths.PROJECT_ROOT / "runs"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert runs_root() == Path("/kaggle/working/runs")
    monkeypatch.setenv("KIT_RUNS_DIR", str(tmp_path / "mine"))
    assert runs_root() == tmp_path / "mine"


def test_use_runs_root_checks_the_folder_and_sets_it_for_later_stages(plain_env, tmp_path):
    assert use_runs_root(str(tmp_path / "persistent" / "runs")) == tmp_path / "persistent" / "runs"
    assert os.environ["KIT_RUNS_DIR"] == str(tmp_path / "persistent" / "runs")  # find_run, subprocesses
    assert runs_root() == tmp_path / "persistent" / "runs"
    assert use_runs_root("") == tmp_path / "persistent" / "runs"  # empty: the root already set
    assert list((tmp_path / "persistent" / "runs").iterdir()) == []  # the write test leaves nothing


def test_a_runs_root_that_cannot_be_written_is_one_line(plain_env, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RunsRootError) as e:
        use_runs_root(str(tmp_path / "a-file" / "runs"))
    assert str(e.value) == (
        f"runs root {tmp_path / 'a-file' / 'runs'} cannot be written (Not a directory); "
        "set runs_dir (or KIT_RUNS_DIR) to a folder you can write"
    )
    assert "KIT_RUNS_DIR" not in os.environ


def test_drive_outside_colab_is_refused(plain_env):
    with pytest.raises(RunsRootError) as e:
        use_runs_root("/content/drive/MyDrive/kit-runs")
    assert str(e.value) == (
        "runs root /content/drive/MyDrive/kit-runs is on Google Drive (/content/drive), which "
        "only a Colab notebook can mount; choose a local folder for runs_dir"
    )
    assert not Path("/content/drive").exists()


def install_cell(tmp_path, **env):
    """The train notebook's install cell as a Kaggle runtime runs it, in an empty folder."""
    cwd = tmp_path / "working"
    cwd.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k != "KIT_REPO"}
    return subprocess.run(
        [sys.executable, "-c", shared_cells("train")["kit-install"]],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**clean, "KAGGLE_KERNEL_RUN_TYPE": "Interactive", **env},
    )


def test_the_install_cell_without_kit_repo_says_what_to_set(tmp_path):
    result = install_cell(tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Set KIT_REPO first: %env KIT_REPO=<the kit's git URL, or a folder holding it, e.g. on Drive>"
    )


def test_the_install_cell_with_a_repository_that_cannot_be_cloned_is_one_line(tmp_path):
    result = install_cell(tmp_path, KIT_REPO=f"file://{tmp_path}/no-such-repo")
    assert result.returncode == 1
    assert "fatal:" in result.stdout  # git's own message, shown above
    assert result.stderr.strip().splitlines()[-1] == (
        f"Could not clone KIT_REPO='file://{tmp_path}/no-such-repo' (git's message above): check the URL or folder"
    )
    assert not (tmp_path / "working" / "unsloth-notebook-kit").exists()


def test_the_install_cell_does_nothing_outside_a_hosted_runtime(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KAGGLE_KERNEL_RUN_TYPE", "KIT_REPO")}
    result = subprocess.run(
        [sys.executable, "-c", shared_cells("train")["kit-install"]],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        env=env,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_install_cell_copies_a_kit_folder_without_its_venv_and_runs_and_sets_it_up(tmp_path):
    folder = tmp_path / "drive" / "unsloth-notebook-kit"  # e.g. /content/drive/MyDrive/unsloth-notebook-kit
    for name, text in {
        "kit/__init__.py": "",
        "recipes/x.yaml": "model: {}\n",
        ".venv/bin/python": "big",
        "runs/old/manifest.json": "{}",
        "scripts/setup.sh": 'echo "set-up from $(cd "$(dirname "$0")/.." && pwd) with $KIT_PYTHON"\n',
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    result = install_cell(tmp_path, KIT_REPO=str(folder))
    copy = tmp_path / "working" / "unsloth-notebook-kit"
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"set-up from {copy} with {sys.executable}"  # the copy's set-up, into this Python
    assert sorted(p.name for p in copy.iterdir()) == ["kit", "recipes", "scripts"]  # no .venv, no runs
    again = install_cell(tmp_path, KIT_REPO=str(folder))  # a second notebook: the copy is reused
    assert again.returncode == 0 and again.stdout.strip() == result.stdout.strip()
