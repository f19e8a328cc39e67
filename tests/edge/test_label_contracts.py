"""Failure contracts of label sets: which set a name means, over-long prompts, corrupt or
truncated embedding files, `embed-labels`, and the progress of a first embedding."""

import logging
from pathlib import Path

import pytest

from edge.errors import LabelSetError
from edge.labels.labelset import resolve_label_set, shipped_label_sets

MINE = "name: mine\nlabels: [a]\n"


# --- which set `--labels NAME` means --------------------------------------------------------------

@pytest.mark.parametrize("local", ["urban", "urban.yaml"])
def test_a_bare_shipped_name_is_the_shipped_set_even_beside_a_local_file(tmp_path, monkeypatch, caplog, local):
    (tmp_path / local).write_text(MINE)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="edge.labels.labelset"):
        found = resolve_label_set("urban")
    assert found.name == "urban" and found.shipped
    assert found.source == str(shipped_label_sets()["urban"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"./{local}" in warnings[0] and f"--labels ./{local}" in warnings[0]
    assert any(f"label set 'urban': shipped set ({found.source})" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spec", ["./urban.yaml", "sub/../urban.yaml", "ABS"])
def test_a_file_wins_only_when_given_as_a_path(tmp_path, monkeypatch, caplog, spec):
    (tmp_path / "urban.yaml").write_text(MINE)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = str(tmp_path / "urban.yaml") if spec == "ABS" else spec
    with caplog.at_level(logging.INFO, logger="edge.labels.labelset"):
        found = resolve_label_set(spec)
    assert found.name == "mine" and not found.shipped and Path(found.source) == Path(spec)
    assert any(f"label set 'mine': file {spec}" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_bare_name_that_is_no_shipped_set_is_a_local_file(tmp_path, monkeypatch, caplog):
    (tmp_path / "site.yaml").write_text(MINE)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="edge.labels.labelset"):
        found = resolve_label_set("site.yaml")
    assert found.name == "mine" and not found.shipped
    assert any("label set 'mine': file ./site.yaml" in r.getMessage() for r in caplog.records)


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(LabelSetError, match="is a directory: pass a label-set YAML file"):
        resolve_label_set(str(tmp_path))
