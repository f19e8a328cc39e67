"""Training data: catalogues, splits, tiling, skipped files and the feature cache, on real clips."""

import csv
import logging
import os
import shutil

import numpy as np
import pytest
import torch

import train.data.datasets as datasets
from edge.capture.audio import read_audio
from edge.features import Frontend, tile_frames
from train.augment import Augment
from train.data import (
    ESC50_CLASSES,
    US8K_CLASSES,
    Clip,
    ClipDataset,
    DatasetError,
    DataSpec,
    FeatureCache,
    build_dataset,
    holdout_classes,
    make_loader,
    model_samples,
    random_split,
    read_csv,
    read_esc50,
    read_us8k,
    select_folds,
    split_clips,
)
from train.features import LogMel

FE = Frontend()
N = model_samples(FE)  # 320000: 10 s at 32 kHz
SHORT_US8K = "fold1/102305-6-0-0.ogg"  # a gun shot well under 4 s


def copy_clips(data_dir, tmp_path, count=3):
    """`count` ESC-50 clips of different classes copied beside a CSV (so tests may touch them)."""
    rows = list(csv.DictReader(open(data_dir / "esc50/meta.csv")))[::500][:count]
    lines = ["file,label"]
    for row in rows:
        shutil.copy(data_dir / "esc50/audio" / row["filename"], tmp_path / row["filename"])
        lines.append(f"{row['filename']},{row['category']}")
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "data.csv", rows


# ------------------------------------------------------------------------- catalogues

@pytest.mark.data
def test_esc50_catalogue(data_dir):
    clips, names = read_esc50(data_dir / "esc50")
    assert names == list(ESC50_CLASSES) and len(names) == 50
    assert (names[0], names[20], names[49]) == ("dog", "crying_baby", "hand_saw")  # official target order
    assert len(clips) == 1600 and all(np.bincount([c.target for c in clips]) == 32)
    known = [c for c in clips if c.fold is not None]
    assert {c.fold for c in known} == {1, 2, 3, 5} and len(known) == 44
    official = next(c for c in clips if c.path.name == "1-22694-B-20.flac")
    assert (official.target, official.fold, official.group) == (20, 1, "22694")
    assert all(c.path.is_file() for c in clips[::100])


@pytest.mark.data
def test_us8k_catalogue_and_folds(data_dir):
    clips, names = read_us8k(data_dir / "us8k")
    assert names == list(US8K_CLASSES) and (names[0], names[3], names[9]) == ("air_conditioner", "dog_bark", "street_music")
    assert len(clips) == 1787
    assert len(select_folds(clips, [1])) == 873 and len(select_folds(clips, [2])) == 888
    clip = next(c for c in clips if c.path.name == "100032-3-0-0.ogg")
    assert (clip.target, clip.fold, clip.group) == (3, 5, "100032")
    assert clip.path == data_dir / "us8k/audio/fold5/100032-3-0-0.ogg" and clip.path.is_file()


def test_meta_that_disagrees_with_the_official_classes_fails(tmp_path):
    (tmp_path / "meta.csv").write_text("filename,fold,target,category\n1-1-A-0.wav,1,0,cat\n")
    with pytest.raises(DatasetError, match=r"meta.csv:2: target 0 is 'dog' in ESC-50 but the row says 'cat'"):
        read_esc50(tmp_path)
    with pytest.raises(DatasetError, match="no UrbanSound8K meta file"):
        read_us8k(tmp_path / "nowhere")


def test_csv_class_order(tmp_path):
    (tmp_path / "d.csv").write_text("file,label,fold\na.wav,siren,1\nsub/b.wav,dog,\nc.wav,siren,unknown\n")
    clips, names = read_csv(tmp_path / "d.csv")
    assert names == ["dog", "siren"]  # sorted unique labels
    assert [c.target for c in clips] == [1, 0, 1] and [c.fold for c in clips] == [1, None, None]
    assert clips[1].path == tmp_path / "sub/b.wav"  # relative to the CSV
    clips, names = read_csv(tmp_path / "d.csv", classes=["siren", "dog", "bird"])
    assert names == ["siren", "dog", "bird"] and [c.target for c in clips] == [0, 1, 0]
    with pytest.raises(DatasetError, match=r"label\(s\) 'dog' are not in the given classes"):
        read_csv(tmp_path / "d.csv", classes=["siren"])


def test_one_label_spelt_two_ways_is_refused_with_its_lines(tmp_path):
    """`Dog barking` and `dog_barking` had trained as two classes that the device reads as one."""
    (tmp_path / "d.csv").write_text("file,label\na.wav,dog barking\nb.wav,Dog barking\nc.wav,siren\n"
                                    "d.wav,dog_barking\n")
    with pytest.raises(DatasetError) as info:
        read_csv(tmp_path / "d.csv")
    assert "'dog barking' (line 2), 'Dog barking' (line 3), 'dog_barking' (line 5)" in str(info.value)


def test_rows_a_csv_reader_gets_wrong_are_refused_with_their_real_line(tmp_path, caplog):
    """An unquoted comma in a label made the class `Dog` (the rest under no column); a file listed
    twice trained twice, under two labels if it had two; a blank line above a bad row shifted the line
    an error named; a group with a space after it was another recording than the same group without."""
    cases = {
        "file,label\na.wav,siren\nb.wav,Dog, barking\n": r"d.csv:3: 3 fields, the header names 2: a value holding "
                                                          r"a comma must be quoted",
        "file,label\na.wav,siren\nb.wav,dog\na.wav,dog\n": r"d.csv:4: a.wav is listed on line 2 too \(as 'siren' "
                                                           r"there and 'dog' here\): list each file once",
        "file,label\na.wav,siren\na.wav,siren\n": r"d.csv:3: a.wav is listed on line 2 too \(with the same label\)",
        "file,label,fold\na.wav,siren,1\n\n\nb.wav,dog,x\n": r"d.csv:5: fold 'x'",
        'file,label,fold\na.wav,"a\nsiren",1\nb.wav,dog,x\n': r"d.csv:4: fold 'x'",
    }
    for text, message in cases.items():
        (tmp_path / "d.csv").write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_csv(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text("file,label,group\na.wav,siren,r1\nb.wav,siren,r1 \nc.wav,dog,\n")
    with caplog.at_level(logging.WARNING):
        clips, _ = read_csv(tmp_path / "d.csv")
    assert [c.group for c in clips] == ["r1", "r1", None]
    assert "1 of 3 clips have no group: each is taken as a recording of its own" in caplog.text


@pytest.mark.parametrize("header, message", [
    ("file;label\na.wav;siren\n", "found: 'file;label'\\): its columns are separated by semicolons; write it with commas"),
    ("file\tlabel\na.wav\tsiren\n", "separated by tabs"),
    ("path,class\na.wav,siren\n", "rename 'path' to 'file'; rename 'class' to 'label' \\(column names are exact"),
    ("file, label\na.wav, siren\n", "rename ' label' to 'label'"),
    ("File,Label\na.wav,siren\n", "rename 'File' to 'file'; rename 'Label' to 'label'"),
    ("Datei,Klasse\na.wav,siren\n", "found: 'Datei', 'Klasse'\\)$"),  # nothing to go on: no hint
    # the first `label` column's values were dropped unsaid (DictReader keeps the last)
    ("file,label,label\na.wav,siren,\n", "column\\(s\\) 'label' appear more than once in the header"),
])
def test_a_header_that_is_not_file_label_says_why(tmp_path, header, message):
    (tmp_path / "d.csv").write_text(header)
    with pytest.raises(DatasetError, match=message):
        read_csv(tmp_path / "d.csv")


def test_columns_no_reader_uses_may_repeat(tmp_path):
    """A spreadsheet's export ends rows with empty columns (`file,label,,`), a site keeps two `note`s:
    only a column the reader uses, named twice, loses values."""
    (tmp_path / "d.csv").write_text("file,label,,,note,note\na.wav,siren,,,x,y\nb.wav,dog,,,,\n")
    clips, names = read_csv(tmp_path / "d.csv")
    assert names == ["dog", "siren"] and len(clips) == 2


def test_a_clip_shorter_than_one_frame_is_padded_as_listen_pads_it(tmp_path, caplog):
    """A 100-sample clip had stopped an epoch inside torch.stft with a traceback naming no file."""
    import soundfile as sf

    sf.write(tmp_path / "short.wav", np.full(100, 0.1, np.float32), FE.sample_rate)
    sf.write(tmp_path / "long.wav", 0.1 * np.random.default_rng(0).standard_normal(FE.sample_rate), FE.sample_rate)
    (tmp_path / "d.csv").write_text("file,label\nshort.wav,click\nlong.wav,hiss\n")
    clips, names = read_csv(tmp_path / "d.csv")
    with caplog.at_level(logging.WARNING):
        ds = ClipDataset(clips, names, FE, cache=tmp_path / "cache", augment=Augment(), seed=0)
    assert "short.wav is shorter than one frame" in caplog.text and len(ds) == 2
    for augmented in (True, False):
        ds.augment.train(augmented)
        mel, target = ds[0]
        assert mel.shape == (1, FE.frames, FE.n_mels) and torch.isfinite(mel).all() and target == 0


# ------------------------------------------------------------------------------ splits

def test_a_held_out_split_sharing_a_file_is_refused_and_one_sharing_a_recording_is_warned_of(tmp_path, caplog):
    """The same files listed again in the test fold had trained silently, and their "test"
    accuracy was read as held out; a recording (group) on both sides reads high too."""
    from train.data import check_held_out

    train = [Clip(tmp_path / "a.wav", 0, 1, "rec1"), Clip(tmp_path / "b.wav", 1, 1, "rec2")]
    with pytest.raises(DatasetError, match=r"1 of the 2 test clips are training clips too \(e.g. .*a.wav\)"):
        check_held_out(train, [Clip(tmp_path / "sub/../a.wav", 0, 2, "rec9"), Clip(tmp_path / "c.wav", 0, 2)],
                       "test", "clips.csv")
    with caplog.at_level(logging.WARNING):
        check_held_out(train, [Clip(tmp_path / "c.wav", 0, 2, "rec2")], "test", "clips.csv")
    assert "1 recording(s) (group) have clips in training and in the test split (e.g. rec2)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_held_out([Clip(tmp_path / "a.wav", 0, None)], [Clip(tmp_path / "c.wav", 0, None)], "val", "clips.csv")
    assert "val accuracy is optimistic; give a CSV a `group` column" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_held_out(train, [Clip(tmp_path / "c.wav", 0, 2, "rec3")], "test", "clips.csv")
    assert caplog.text == ""

@pytest.mark.data
def test_fold_splits(data_dir):
    spec = DataSpec("us8k", str(data_dir / "us8k"), test_folds=(2,), train_folds=(1,))
    train, names = split_clips(spec, "train")
    test, _ = split_clips(spec, "test")
    assert (len(train), len(test)) == (873, 888) and names == list(US8K_CLASSES)
    assert {c.fold for c in train} == {1} and {c.fold for c in test} == {2}
    with pytest.raises(DatasetError, match=r"split 'test' .* is empty \(folds present: \[1, 2, 5, 7, 8\]"):
        split_clips(DataSpec("us8k", str(data_dir / "us8k"), test_folds=(4,)), "test")


@pytest.mark.data
def test_random_split_of_unknown_folds(data_dir):
    spec = DataSpec("esc50", str(data_dir / "esc50"), val_fraction=0.2, split_seed=7)
    train, _ = split_clips(spec, "train")
    val, _ = split_clips(spec, "val")
    assert len(train) + len(val) == 1600 and not {c.path for c in train} & {c.path for c in val}
    assert all(np.bincount([c.target for c in val], minlength=50) == round(0.2 * 32))  # stratified
    assert [c.path for c in split_clips(spec, "val")[0]] == [c.path for c in val]  # deterministic
    other = split_clips(DataSpec("esc50", spec.root, val_fraction=0.2, split_seed=8), "val")[0]
    assert {c.path for c in other} != {c.path for c in val}


def test_random_split_keeps_groups_whole():
    clips = [Clip(f"/x/{g}-{i}.wav", target=g % 3, fold=None, group=f"src{g}") for g in range(30) for i in range(4)]
    clips += [Clip(f"/x/solo{i}.wav", target=i % 3, fold=None) for i in range(30)]
    train, val = random_split(clips, 0.25, seed=1)
    assert len(train) + len(val) == len(clips) and 0.15 < len(val) / len(clips) < 0.35
    assert not {c.group for c in train if c.group} & {c.group for c in val if c.group}
    assert random_split(list(reversed(clips)), 0.25, seed=1)[1] != []  # any input order works
    assert {c.path for c in random_split(list(reversed(clips)), 0.25, seed=1)[1]} == {c.path for c in val}


@pytest.mark.data
def test_class_holdout(data_dir):
    spec = DataSpec("us8k", str(data_dir / "us8k"), test_folds=(2,), train_folds=(1,), holdout=("siren", "car_horn"))
    train, names = split_clips(spec, "train")
    test, _ = split_clips(spec, "test")
    held = {names.index("siren"), names.index("car_horn")}
    assert not {c.target for c in train} & held and held <= {c.target for c in test}
    kept, out = holdout_classes(test, names, ["siren"])
    assert len(kept) + len(out) == len(test) and {c.target for c in out} == {8}
    with pytest.raises(DatasetError, match=r"'sirens' are not in this dataset; its classes are: air_conditioner"):
        holdout_classes(test, names, ["sirens"])


# ------------------------------------------------------------------------------ tiling

@pytest.mark.data
def test_items_are_tiled_log_mels_of_the_clip(data_dir, tmp_path):
    """A 5 s ESC-50 clip: its own 501 frames, then again from the start (edge.features.tile_frames)."""
    assert N == 320000 and FE.num_frames(N) == FE.frames == 1001
    clips, names = read_esc50(data_dir / "esc50")
    clip = next(c for c in clips if c.path.name == "1-22694-B-20.flac")
    esc = read_audio(clip.path, FE.sample_rate)
    assert esc.size == 160000
    mel = ClipDataset([clip], names, FE, cache=tmp_path)[0][0][0].numpy()
    own = LogMel(FE)(torch.from_numpy(esc)[None])[0].numpy()
    assert mel.shape == (1001, 64) and own.shape == (501, 64)
    np.testing.assert_array_equal(mel[:501], own)
    np.testing.assert_array_equal(mel[501:], mel[:500])


@pytest.mark.data
def test_items_and_batches(data_dir, tmp_path):
    clips, names = read_us8k(data_dir / "us8k")
    chosen = [c for c in clips if c.path.name == SHORT_US8K.split("/")[1]] + clips[:2]
    ds = ClipDataset(chosen, names, FE, cache=tmp_path)
    assert len(ds) == 3 and ds.skipped == [] and 0 < ds.clip_seconds <= 4.0
    mel, target = ds[0]
    assert mel.shape == (1, 1001, 64) and mel.dtype == torch.float32 and target == 6
    assert torch.isfinite(mel).all()
    mels, targets = next(iter(make_loader(ds, batch_size=3, shuffle=True)))
    assert mels.shape == (3, 1, 1001, 64) and targets.dtype == torch.int64
    assert sorted(targets.tolist()) == sorted(ds.targets)


# ------------------------------------------------------------------------ skipped files

@pytest.mark.data
def test_unreadable_files_are_skipped_and_counted(data_dir, tmp_path, caplog):
    csv_path, rows = copy_clips(data_dir, tmp_path, count=2)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really audio" * 50)
    (tmp_path / "empty.flac").write_bytes(b"")
    with open(csv_path, "a") as f:
        f.write(f"corrupt.wav,{rows[0]['category']}\nempty.flac,{rows[1]['category']}\nmissing.ogg,dog\n")
    clips, names = read_csv(csv_path)
    with caplog.at_level(logging.WARNING, logger="train.data.datasets"):
        ds = ClipDataset(clips, names, FE, cache=tmp_path / "cache")
    assert len(ds) == 2 and len(ds.skipped) == 3
    assert {p.name for p, _ in ds.skipped} == {"corrupt.wav", "empty.flac", "missing.ogg"}
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in ("corrupt.wav", "empty.flac", "missing.ogg"):
        assert name in warned
    assert sum(m.shape[0] for m, _ in make_loader(ds, 2, shuffle=False)) == 2  # a whole epoch runs
    bad = [c for c in clips if c.path.name in ("corrupt.wav", "empty.flac")]
    with pytest.raises(DatasetError, match=r"none of the 2 clips could be read \(the first: .*corrupt.wav"):
        ClipDataset(bad, names, FE, cache=tmp_path / "cache")


# -------------------------------------------------------------------------------- cache

@pytest.mark.data
def test_cache_hits_and_invalidation(data_dir, tmp_path, monkeypatch):
    csv_path, _ = copy_clips(data_dir, tmp_path, count=3)
    clips, names = read_csv(csv_path)
    cache_dir = tmp_path / "cache"
    first = ClipDataset(clips, names, FE, cache=cache_dir)
    mels = [first[i][0] for i in range(3)]

    decoded = []

    def counting_read_audio(path, rate):
        decoded.append(path.name)
        return read_audio(path, rate)

    monkeypatch.setattr(datasets, "read_audio", counting_read_audio)
    cache = FeatureCache(cache_dir)
    second = ClipDataset(clips, names, FE, cache=cache)
    for i in range(3):
        torch.testing.assert_close(second[i][0], mels[i], rtol=0, atol=0)
    assert decoded == [] and cache.hits == {"wave": 3, "mel": 3} and not cache.misses

    # A touched file is decoded again; the others still hit.
    st = clips[1].path.stat()
    os.utime(clips[1].path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = ClipDataset(clips, names, FE, cache=cache_dir)
    [third[i] for i in range(3)]
    assert decoded == [clips[1].path.name]

    # Another frontend at the same rate reuses the waveforms but not the log-mels.
    decoded.clear()
    narrow = Frontend(n_mels=32, f_max=8000.0)
    cache = FeatureCache(cache_dir)
    fourth = ClipDataset(clips, names, narrow, cache=cache)
    assert fourth[0][0].shape == (1, 1001, 32)
    assert decoded == [] and cache.misses["mel"] == 1 and cache.hits["wave"] == 4  # 3 at build, 1 for the mel

    # Another model rate needs a new decode.
    ClipDataset(clips, names, Frontend(sample_rate=16000, hop_length=160, f_max=8000.0), cache=cache_dir)
    assert len(decoded) == 3


@pytest.mark.data
def test_augmented_items_are_seeded_per_item(data_dir, tmp_path):
    csv_path, _ = copy_clips(data_dir, tmp_path, count=2)
    clips, names = read_csv(csv_path)
    ds = ClipDataset(clips, names, FE, cache=tmp_path / "cache", augment=Augment(), seed=3)
    a = ds[1][0]
    ds[0]  # another item in between does not change item 1
    torch.testing.assert_close(ds[1][0], a, rtol=0, atol=0)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], a)
    ds.augment.eval()  # eval: the plain tiled log-mel (served from the mel cache)
    clip_mel = LogMel(FE)(torch.from_numpy(read_audio(clips[1].path, FE.sample_rate)[:N])[None])[0].numpy()
    expected = torch.from_numpy(tile_frames(clip_mel, FE.frames))[None]
    torch.testing.assert_close(ds[1][0], expected, rtol=0, atol=0)


def test_data_spec_errors():
    with pytest.raises(DatasetError, match="data kind 'esc-50' is not one of esc50, us8k, csv"):
        DataSpec("esc-50", "x")
    with pytest.raises(DatasetError, match=r"fold\(s\) \[2\] are in both"):
        DataSpec("us8k", "x", test_folds=(2,), train_folds=(1, 2))
    with pytest.raises(DatasetError, match="split 'dev' is not one of train, val, test"):
        build_dataset(DataSpec("csv", "x.csv"), "dev")


def test_a_label_set_in_another_order_than_the_classes_is_put_in_their_order(tmp_path):
    """A recipe's `labels:` in another order than the CSV's (sorted) classes had been a raw
    ValueError traceback, after every clip was decoded; names that differ are a ConfigError that
    says which."""
    from train.config import ConfigError
    from train.scorer import class_label_set

    labels = tmp_path / "mine.yaml"
    labels.write_text("name: mine\nlabels:\n  - {name: siren, prompts: [a siren wailing]}\n  - Dog_bark\n")
    ordered = class_label_set(str(labels), ["dog bark", "siren"], "csv")
    assert ordered.names == ["dog bark", "siren"] and "a siren wailing" in ordered.labels[1].prompts
    with pytest.raises(ConfigError, match=r"classes without a label: car horn; labels of no class: siren"):
        class_label_set(str(labels), ["dog bark", "car horn"], "csv")
