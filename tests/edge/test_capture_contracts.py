"""Failure contracts of audio files: a file cut short or damaged part-way is scored as far as
it decodes, with a warning that says so; a file shorter than one analysis frame is padded and
scored, with a warning; a path that is no readable audio file says what it is."""

import logging

import numpy as np
import pytest
import soundfile as sf

import edge.capture.audio as audio
from edge.capture.audio import read_audio
from edge.capture.sources import FileSource
from edge.errors import AudioError
from tests.signals import noise

RATE = 16000
FRAME = 0.025  # 400 samples at 16 kHz: the demo bundle's analysis window


def read_all(source) -> np.ndarray:
    chunks = []
    with source:
        while (chunk := source.read(4000, 5.0)) is not None:
            chunks.append(chunk)
    return np.concatenate(chunks)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def cut(tmp_path, fmt, subtype, ext, seconds=3.0, keep=0.5, junk=0):
    """A file whose last part is missing (its header still promises all of it), plus junk bytes."""
    full = tmp_path / f"full.{ext}"
    samples = noise(seconds, RATE, amplitude=0.1)
    sf.write(full, samples, RATE, format=fmt, subtype=subtype)
    data = full.read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: int(len(data) * keep)] + np.random.default_rng(0).bytes(junk))
    return path, samples


@pytest.mark.parametrize("fmt,subtype,ext,junk", [("WAV", "PCM_16", "wav", 0), ("OGG", "VORBIS", "ogg", 0),
                                                  ("FLAC", "PCM_16", "flac", 0), ("FLAC", "PCM_16", "flac", 3000)])
def test_a_truncated_file_is_scored_as_far_as_it_decodes_with_a_warning(tmp_path, caplog, fmt, subtype, ext, junk):
    path, samples = cut(tmp_path, fmt, subtype, ext, junk=junk)
    x = read_audio(path, RATE)
    assert 0.5 * RATE < x.size < 3 * RATE and np.isfinite(x).all()
    if ext != "ogg":  # lossless: the decoded part is the start of the recording
        np.testing.assert_allclose(x, samples[:x.size], atol=1e-4)
    (message,) = warnings(caplog)
    seconds = f"{x.size / RATE:.3f} s"
    assert f"audio file {path} is truncated or corrupt after {seconds}" in message
    assert f"scored the first {seconds}" in message

    # streamed (listen's source): what decodes is delivered, then a failure, as NaN samples are (listen
    # scores what came before and reports it: a status error, exit 1), not a quiet end
    source = FileSource(path, sample_rate=RATE, fast=True, block=1000)
    got = []
    with pytest.raises(AudioError) as failed:
        with source:
            while (chunk := source.read(4000, 5.0)) is not None:
                got.append(chunk)
    streamed = np.concatenate(got)
    common = min(streamed.size, x.size)  # a decode error loses the block it happens in: sizes may differ
    assert common > 0.5 * RATE
    np.testing.assert_allclose(streamed[:common], x[:common], atol=1e-6)
    seconds = f"{streamed.size / RATE:.3f} s"
    assert f"audio file {path} is truncated or corrupt after {seconds}" in str(failed.value)
    assert f"scored the first {seconds}, and no more" in str(failed.value) and "export it again" in str(failed.value)


def test_an_intact_file_gives_no_warning(tmp_path, caplog):
    path = tmp_path / "ok.flac"
    sf.write(path, noise(1.0, RATE), RATE)
    read_audio(path, RATE)
    source = FileSource(path, sample_rate=RATE, fast=True)
    read_all(source)
    assert not warnings(caplog) and source.end_reason == f"end of audio file {path}"


def test_a_file_shorter_than_one_frame_is_padded_and_scored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "click.wav"
    sf.write(path, noise(0.006, RATE, amplitude=0.5), RATE, subtype="FLOAT")
    x = read_audio(path, RATE, frame_seconds=FRAME)
    assert x.size == 400 and np.all(x[96:] == 0) and np.any(x[:96] != 0)
    assert warnings(caplog) == [f"audio file {path} is shorter than one frame (6 ms < frame 25 ms): "
                                "padded with silence and scored"]
    caplog.clear()
    streamed = read_all(FileSource(path, sample_rate=RATE, fast=True, frame_seconds=FRAME))
    np.testing.assert_array_equal(streamed, x)
    assert len(warnings(caplog)) == 1 and "shorter than one frame (6 ms < frame 25 ms)" in warnings(caplog)[0]


def test_a_directory_is_named_as_one(tmp_path):
    for call in (lambda: read_audio(tmp_path, RATE), lambda: FileSource(tmp_path)):
        with pytest.raises(AudioError, match=f"cannot read audio file {tmp_path}: it is a directory: pass an audio file"):
            call()


def test_permission_denied_is_named(tmp_path, monkeypatch):
    path = tmp_path / "locked.wav"
    sf.write(path, noise(0.5, RATE), RATE)

    def denied(*args, **kwargs):  # the tests run as root, for whom chmod 000 changes nothing
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(audio, "open", denied, raising=False)
    for call in (lambda: read_audio(path, RATE), lambda: FileSource(path)):
        with pytest.raises(AudioError, match=f"cannot read audio file {path}: permission denied"):
            call()


def test_a_file_that_is_not_audio_says_so_and_lists_the_formats(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 20)
    for call in (lambda: read_audio(path, RATE), lambda: FileSource(path)):
        with pytest.raises(AudioError, match=f"cannot read audio file {path}: it is not an audio file libsndfile "
                                             r"can read \(.*formats: .*FLAC.*OGG.*WAV"):
            call()


def test_nan_in_a_file_still_raises_after_what_came_before(tmp_path):
    """The lead's listen loop turns this into a status error after scoring the audio before it."""
    samples = noise(2.0, RATE)
    samples[24000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, samples, RATE, subtype="FLOAT")
    source = FileSource(path, sample_rate=RATE, fast=True, block=1000)
    got = []
    with pytest.raises(AudioError, match="NaN or infinite samples, the first at 1.500 s"):
        with source:
            while (chunk := source.read(4000, 5.0)) is not None:
                got.append(chunk)
    assert sum(c.size for c in got) == 24000
