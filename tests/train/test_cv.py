"""Cross-validation and the held-out figures of runs (train/cv.py), on fakes: nothing trains."""

import json
from pathlib import Path

import pytest
import torch

from train import cv
from train.checkpoint import FORMAT
from train.config import ConfigError


@pytest.fixture
def recipe(tmp_path):
    """A recipe over a CSV of 90 clips in folds 1, 2 and 3, 30 each (the files are never read)."""
    (tmp_path / "clips.csv").write_text("file,label,fold\n" + "".join(
        f"{i}.wav,{'dog' if i % 2 else 'cat'},{1 + i % 3}\n" for i in range(90)))
    path = tmp_path / "recipe.yaml"
    path.write_text("model: small\ndata: {kind: csv, root: clips.csv, val_fraction: 0.2}\nepochs: 7\n")
    return path


@pytest.fixture
def fake_fit(monkeypatch):
    """fit() replaced: it records each run and scores fold K as K / 10 at its last epoch (and
    K / 10 + 0.05 at a better one before: the best epoch, chosen on the held-out fold)."""
    runs = []

    def fit(config, out, resume=False, command=""):
        runs.append({"test_folds": config.data.test_folds, "val_fraction": config.data.val_fraction,
                     "epochs": config.epochs, "out": Path(out), "command": command, "resume": resume})
        k = config.data.test_folds[0]
        return {"best": k / 10 + 0.05, "history": [{"epoch": 1, "test_accuracy": k / 10 + 0.05},
                                                   {"epoch": config.epochs, "test_accuracy": k / 10}]}

    monkeypatch.setattr(cv, "fit", fit)
    return runs


def test_cross_validate_holds_out_each_fold_in_turn(recipe, fake_fit, tmp_path):
    seen = []
    summary, path = cv.cross_validate(recipe, out=tmp_path / "cv", epochs=2, on_fold=seen.append)
    assert [run["test_folds"] for run in fake_fit] == [(1,), (2,), (3,)]  # every fold of the data
    assert all(run["val_fraction"] == 0.0 and run["epochs"] == 2 for run in fake_fit)  # the fold validates
    assert [run["out"] for run in fake_fit] == [tmp_path / "cv" / f"fold{k}" for k in (1, 2, 3)]
    assert [r["fold"] for r in seen] == [1, 2, 3] and seen[1]["accuracy"] == 0.2  # the last epoch's
    assert seen[1]["best_epoch_accuracy"] == pytest.approx(0.25)
    assert not any(run["resume"] for run in fake_fit)  # new folders: nothing to resume (and no warning of it)
    (tmp_path / "cv" / "fold2").mkdir()
    (tmp_path / "cv" / "fold2" / "last.pt").write_bytes(b"")  # a cv stopped part-way goes on where it stopped
    fake_fit.clear()
    cv.cross_validate(recipe, out=tmp_path / "cv", epochs=2)
    assert [run["resume"] for run in fake_fit] == [False, True, False]
    (tmp_path / "cv" / "fold3").mkdir(exist_ok=True)
    (tmp_path / "cv" / "fold3" / "best.pt").write_bytes(b"")  # stopped between best.pt and last.pt
    fake_fit.clear()
    cv.cross_validate(recipe, out=tmp_path / "cv", epochs=2)
    assert [run["resume"] for run in fake_fit] == [False, True, True]
    assert summary["mean"] == pytest.approx(0.2) and summary["std"] == pytest.approx(0.1)
    assert path == tmp_path / "cv" / "cv.json" and json.loads(path.read_text()) == summary


def test_a_fold_finished_before_test_accuracy_is_read_by_its_val_accuracy(recipe, monkeypatch, tmp_path):
    """Folds run before 2026-12-05 recorded the held-out fold as val_accuracy: cv had crashed on them."""
    def fit(config, out, resume=False, command=""):
        k = config.data.test_folds[0]
        return {"best": k / 10, "history": [{"epoch": 1, "val_accuracy": k / 10}]}

    monkeypatch.setattr(cv, "fit", fit)
    summary, _ = cv.cross_validate(recipe, folds=[1, 3], out=tmp_path / "cv")
    assert [f["accuracy"] for f in summary["folds"]] == [0.1, 0.3]


def test_cross_validate_runs_only_the_folds_asked_for(recipe, fake_fit, tmp_path):
    summary, _ = cv.cross_validate(recipe, folds=[3, 1], out=tmp_path / "cv")
    assert [run["test_folds"] for run in fake_fit] == [(3,), (1,)]
    assert fake_fit[0]["epochs"] == 7 and summary["mean"] == pytest.approx(0.2)


def test_cross_validate_refuses_what_it_cannot_split(recipe, fake_fit, tmp_path):
    with pytest.raises(ConfigError, match=r"needs at least 2 folds; --folds gave \[2\]"):
        cv.cross_validate(recipe, folds=[2], out=tmp_path / "cv")
    two = tmp_path / "two.yaml"
    two.write_text("model: small\ndata: [{kind: csv, root: clips.csv}, {kind: csv, root: clips.csv}]\n")
    with pytest.raises(ConfigError, match="cv needs a recipe with one dataset"):
        cv.cross_validate(two, out=tmp_path / "cv")
    with pytest.raises(ConfigError, match="cv needs a recipe with one dataset"):
        cv.cross_validate(two, folds=[1, 2], out=tmp_path / "cv")
    # --folds checked before any training: a fold twice counted it twice (std 0), a fold not in the data
    # failed after the others had trained (hours, on real data)
    with pytest.raises(ConfigError, match="--folds names fold 1 twice"):
        cv.cross_validate(recipe, folds=[1, 1], out=tmp_path / "cv")
    with pytest.raises(ConfigError, match=r"--folds 2,9: fold 9 is not in the data \(its folds: 1, 2, 3\)"):
        cv.cross_validate(recipe, folds=[2, 9], out=tmp_path / "cv")
    assert not fake_fit and not (tmp_path / "cv").exists()


def test_folds_too_small_to_say_anything_are_left_out_and_the_pooled_figure_weighs_each_clip(fake_fit, tmp_path,
                                                                                             caplog):
    """The development UrbanSound8K holds folds 1 and 2 whole and 16, 7 and 3 clips of folds 5, 7 and 8:
    cv held each out in turn and averaged them as equals, and said no fold's size."""
    sizes = {1: 60, 2: 40, 5: 3, 7: 2}
    (tmp_path / "clips.csv").write_text("file,label,fold\n" + "".join(
        f"{k}-{i}.wav,{'dog' if i % 2 else 'cat'},{k}\n" for k, n in sizes.items() for i in range(n)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: small\ndata: {kind: csv, root: clips.csv}\n")
    summary, _ = cv.cross_validate(recipe, out=tmp_path / "cv")
    assert [run["test_folds"] for run in fake_fit] == [(1,), (2,)]
    assert "folds 5 (3 clips), 7 (2 clips) are left out of the cross-validation" in caplog.text
    assert [f["clips"] for f in summary["folds"]] == [60, 40]
    assert summary["mean"] == pytest.approx(0.15) and summary["pooled"] == pytest.approx((0.1 * 60 + 0.2 * 40) / 100)
    caplog.clear()
    fake_fit.clear()
    summary, _ = cv.cross_validate(recipe, folds=[1, 5], out=tmp_path / "cv2")  # named: held out, and warned of
    assert [run["test_folds"] for run in fake_fit] == [(1,), (5,)] and "--folds 5 (3 clips)" in caplog.text
    (tmp_path / "few.csv").write_text("file,label,fold\n" + "".join(f"{i}.wav,{'ab'[i % 2]},{1 + i % 2}\n"
                                                                      for i in range(20)))
    recipe.write_text("model: small\ndata: {kind: csv, root: few.csv}\n")
    with pytest.raises(ConfigError, match=r"needs at least 2 folds of 30\+ clips; the data's folds: 1 \(10 clips\), "
                                          r"2 \(10 clips\); use a random split.*name folds with --folds"):
        cv.cross_validate(recipe, out=tmp_path / "cv3")
    # a fold's clips are those its run holds out: the recipe's max_per_class applies (2 classes x 20 of 60)
    recipe.write_text("model: small\ndata: {kind: csv, root: clips.csv, max_per_class: 20}\n")
    summary, _ = cv.cross_validate(recipe, out=tmp_path / "cv4")
    assert [(f["fold"], f["clips"]) for f in summary["folds"]] == [(1, 40), (2, 40)]


def test_data_as_a_one_item_list_is_one_dataset(recipe, fake_fit, tmp_path):
    """`data: [{...}]` broke --fold (replace() of a tuple) and cv (a tuple has no .kind)."""
    listed = tmp_path / "listed.yaml"
    listed.write_text(recipe.read_text().replace("data: {kind: csv, root: clips.csv, val_fraction: 0.2}",
                                                 "data: [{kind: csv, root: clips.csv, val_fraction: 0.2}]"))
    summary, _ = cv.cross_validate(listed, out=tmp_path / "cv")
    assert [run["test_folds"] for run in fake_fit] == [(1,), (2,), (3,)]


def test_a_recipe_or_csv_not_in_utf8_names_its_line(recipe, tmp_path):
    from train.data.datasets import DatasetError, read_catalogue
    from train.recipe import load_train_config

    latin = tmp_path / "latin.yaml"
    latin.write_bytes(recipe.read_bytes() + "# K\u00fcche\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml: line 4 is not UTF-8 \(byte 0xfc\): save the file as UTF-8"):
        load_train_config(latin)
    (tmp_path / "clips.csv").write_bytes("file,label,fold\n0.wav,d\u00e9g,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"clips.csv: line 2 is not UTF-8 \(byte 0xe9\)"):
        read_catalogue(load_train_config(recipe).data)
    (tmp_path / "clips.csv").write_text("file,label,fold\n")  # said "choose folds that exist"
    with pytest.raises(DatasetError, match=r"clips.csv has a header and no rows: add one row per clip"):
        read_catalogue(load_train_config(recipe).data)


def test_validation_figures_are_each_runs_last_epoch_and_their_mean(tmp_path):
    for name, (first, last) in {"cv1": (0.1, 0.61234), "cv2": (0.2, 0.8)}.items():
        (tmp_path / name).mkdir()
        history = [{"epoch": 1, "val_accuracy_us8k": first}, {"epoch": 2, "val_accuracy_us8k": last, "loss": 1.0}]
        torch.save({"format": FORMAT, "history": history, "training": {"command": f"fit {name}"}},
                   tmp_path / name / "last.pt")
    figures = cv.validation_figures([tmp_path / "cv1", tmp_path / "cv2"])
    assert [(r["run"], r["epochs"], r["val_accuracy_us8k"]) for r in figures["runs"]] == [("cv1", 2, 0.6123),
                                                                                          ("cv2", 2, 0.8)]
    assert figures["runs"][0]["command"] == "fit cv1" and "loss" not in figures["runs"][0]
    assert figures["mean"] == {"val_accuracy_us8k": round((0.6123 + 0.8) / 2, 4)}
    # a run stopped after 2 of its 30 epochs, or of another recipe than the checkpoint's beyond its split, had
    # been averaged in as "the same recipe on held-out clips"
    recipe = {"epochs": 2, "scoring": {"kind": "sigmoid"}, "data": [{"kind": "esc50", "val_fraction": 0.0}]}
    for name, theirs in {"stopped": {**recipe, "epochs": 30}, "other": {**recipe, "scoring": {"kind": "softmax"}},
                         "split": {**recipe, "data": [{"kind": "esc50", "val_fraction": 0.2}]}}.items():
        (tmp_path / name).mkdir()
        torch.save({"format": FORMAT, "history": [{"epoch": 2, "val_accuracy_esc50": 0.9}],
                    "training": {"command": f"fit {name}", "recipe": theirs}}, tmp_path / name / "last.pt")
    with pytest.raises(ConfigError, match="stopped after 2 of its 30 epochs: its figures are not its recipe's last"):
        cv.validation_figures([tmp_path / "stopped"], recipe)
    with pytest.raises(ConfigError, match=r"trained another recipe than the checkpoint \(scoring.kind differ"):
        cv.validation_figures([tmp_path / "other"], recipe)
    assert cv.validation_figures([tmp_path / "split"], recipe)["mean"] == {"val_accuracy_esc50": 0.9}
    # a run from before a key was added to the recipes (background.underlay, 2026-12-06) is the same recipe
    newer = {**recipe, "background": {"count": 400, "underlay": None}}
    (tmp_path / "older").mkdir()
    torch.save({"format": FORMAT, "history": [{"epoch": 2, "val_accuracy_esc50": 0.8}],
                "training": {"recipe": {**recipe, "background": {"count": 400}}}}, tmp_path / "older" / "last.pt")
    assert cv.validation_figures([tmp_path / "older"], newer)["mean"] == {"val_accuracy_esc50": 0.8}
    with pytest.raises(ConfigError, match=r"\(background.count differ"):
        cv.validation_figures([tmp_path / "older"], {**newer, "background": {"count": 40, "underlay": None}})


def test_cv_command_prints_each_fold_and_the_summary(recipe, fake_fit, tmp_path):
    from click.testing import CliRunner

    from train import cli

    result = CliRunner().invoke(cli.main, ["cv", "--config", str(recipe), "--folds", "1,3", "--out",
                                           str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["fold 1: validation accuracy 0.1000 on 30 clips",
                                          "fold 3: validation accuracy 0.3000 on 30 clips",
                                          "2-fold accuracy 0.2000 +- 0.1414 (the folds' mean; over all their clips "
                                          f"0.2000) -> {tmp_path / 'cv' / 'cv.json'}"]
    result = CliRunner().invoke(cli.main, ["cv", "--config", str(recipe), "--folds", "2", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "needs at least 2 folds" in result.output


def test_a_recipe_without_data_reads_the_development_data_where_the_variable_says(tmp_path, monkeypatch):
    """The default dataset's root is $SEMANTICAC_DATA/esc50: it was never expanded, and `fit` said
    'no ESC-50 meta file in $SEMANTICAC_DATA/esc50' with the variable set."""
    from train.recipe import load_train_config

    monkeypatch.setenv("SEMANTICAC_DATA", str(tmp_path / "data"))
    bare = tmp_path / "bare.yaml"
    bare.write_text("epochs: 1\n")
    assert load_train_config(bare).data.root == str(tmp_path / "data" / "esc50")
    monkeypatch.delenv("SEMANTICAC_DATA")
    with pytest.raises(ConfigError, match=r"uses \$SEMANTICAC_DATA, which is not set: export it"):
        load_train_config(bare)
