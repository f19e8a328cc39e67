"""Bundle folders for tests of the bundle contract (graphs are placeholder bytes here:
the model issue's export tests write real ONNX)."""

import os
from pathlib import Path

import pytest

from edge.bundle import BUNDLE_ENV, Bundle, BundleMeta, read_bundle, shipped_bundle, tower_spec, write_bundle_meta
from edge.features import Frontend


def make_bundle(folder: Path, model_id: str = "test-model-0001", with_text: bool = True, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"audio graph placeholder")
    text = None
    if with_text:
        (folder / "text.onnx").write_bytes(b"text graph placeholder")
        text = tower_spec(folder, "text.onnx", ["input_ids"], ["embedding"])
    meta = BundleMeta(
        model_id=model_id, frontend=Frontend(), clip_seconds=5.0, embedding_dim=8, logit_scale=50.0,
        audio=tower_spec(folder, "model.onnx", ["mel"], ["embedding"]), text=text,
        text_encoder={"kind": "clip"}, training={"command": "test"}, license="test only", **fields)
    write_bundle_meta(folder, meta)
    return folder


def trained_bundle() -> Bundle:
    """$SEMANTICAC_BUNDLE, else the demo bundle the package ships; skip when there is neither."""
    path = os.environ.get(BUNDLE_ENV) or shipped_bundle()
    if not path:
        pytest.skip(f"no trained bundle: set ${BUNDLE_ENV} to one, or ship edge/demo_bundle/")
    return read_bundle(path, verify=True)


def bundle_copy(bundle: Bundle, folder: Path, change) -> Path:
    """`bundle` in `folder`: its files linked, its model.json rewritten by `change(meta_dict)`."""
    import json

    folder.mkdir()
    for item in Path(bundle.path).iterdir():
        if item.name != "model.json":
            os.symlink(item, folder / item.name)
    meta = json.loads((Path(bundle.path) / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder
