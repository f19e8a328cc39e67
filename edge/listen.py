"""The listen loop: audio source -> incremental log-mel -> windows -> model -> scores -> events.

    Source.read (model rate) -> StreamingLogMel.push (only the new frames)
      -> every hop, the latest window of frames, tiled to the model's frames
      -> backend.embed (several windows at once when several are ready)
      -> Scorer (softmax(logit_scale * cosine)) -> top-k per window
      -> Smoother -> EventDetector (thresholds, hysteresis, minimum duration) -> start/end
      -> Sink (live view, plain lines or JSON lines)

Windows are counted in frames of the bundle's frontend, so they do not depend on how the
audio arrived: window k holds frames [k * hop, k * hop + window) of the stream's log-mel,
the same frames `log_mel` computes over the whole recording. A window shorter than the
model's input is tiled (edge.features.tile_frames), as training tiles its clips.

A live source never builds a backlog: when inference falls behind and more windows are
ready than one batch holds, the oldest are dropped and counted (`dropped`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from edge.backends.base import Backend
from edge.bundle import Bundle
from edge.capture.sources import FileSource, MicrophoneSource, Source
from edge.events import EventDetector
from edge.features import FrameQueue, Frontend, StreamingLogMel, Windowing, tile_frames
from edge.outputs.sinks import Sink, Status, WindowResult
from edge.scoring import Scorer, Smoother, top_k

log = logging.getLogger(__name__)

READ_SECONDS = 0.2  # a read waits at most this long, so a stop request is seen promptly
SILENCE_WARN_SECONDS = 10.0


@dataclass
class ListenSummary:
    windows: int = 0
    dropped: int = 0
    events: int = 0
    seconds: float = 0.0
    end_reason: str = ""


class Listener:
    """One label set, one model, one source: run() until the source ends or `stop` is set."""

    def __init__(self, bundle: Bundle, backend: Backend, scorer: Scorer, detector: EventDetector,
                 smoother: Smoother, sink: Sink, windowing: Windowing, k: int = 3, max_batch: int = 4):
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} must be at least 1")
        self.frontend = bundle.meta.frontend
        self.backend, self.scorer, self.detector, self.smoother = backend, scorer, detector, smoother
        self.sink, self.windowing, self.k, self.max_batch = sink, windowing, k, max_batch
        self.summary = ListenSummary()
        self._t = 0.0  # stream time of the latest window
        self._arrived = time.perf_counter()  # when the audio that completed the newest window arrived
        self._silence = log_floor_value(self.frontend) + 1e-3
        self._silent_since: float | None = None
        self._silence_warned = False

    def run(self, source: Source, stop: threading.Event | None = None) -> ListenSummary:
        stop = stop or threading.Event()
        live = is_live(source)
        mel, queue = StreamingLogMel(self.frontend), FrameQueue(self.frontend.n_mels)
        next_k = 0
        # Read up to a model window at a time: after a slow inference everything waiting is
        # taken at once, so the windows that are too late can be dropped instead of queued.
        read_size = self.frontend.seconds_to_samples(self.frontend.window_seconds)
        with source:
            self._status("info", f"listening to {source.name}: window {self.windowing.window_seconds:g} s, "
                                 f"hop {self.windowing.hop_seconds:g} s, {len(self.scorer.labels)} labels, "
                                 f"backend {self.backend.name}")
            while not stop.is_set():
                block = source.read(read_size, timeout=READ_SECONDS)
                if block is None:
                    break
                if block.size:
                    self._arrived = time.perf_counter()  # latency runs from here to the window's scores
                    queue.append(mel.push(block))
                    next_k = self._process_ready(queue, next_k, drop_late=live)
            ended = not stop.is_set()
            if ended:  # the last frames need the end of the signal (right-hand padding)
                self._arrived = time.perf_counter()
                queue.append(mel.flush())
                next_k = self._process_ready(queue, next_k, drop_late=False)
                if next_k == 0 and queue.end > 0:  # shorter than one window: score what there is
                    self._infer([(0, queue.window(0, queue.end), queue.end)])
            self.summary.end_reason = source.end_reason or ("stopped" if not ended else "end of stream")
            overflows = source.overflows
        t_end = queue.end * self.windowing.seconds_per_frame
        for event in self.detector.flush(t_end):
            self._emit_event(event)
        self.summary.seconds = self._t = t_end
        if overflows:
            self._status("warning", f"{overflows} input frames were lost: the reader fell behind the device")
        self._status("info", f"stopped ({self.summary.end_reason}): {self.summary.windows} windows, "
                             f"{self.summary.dropped} dropped, {self.summary.events} events")
        return self.summary

    def _process_ready(self, queue: FrameQueue, next_k: int, drop_late: bool) -> int:
        w = self.windowing
        ready = []
        while next_k * w.hop_frames + w.window_frames <= queue.end:
            first = next_k * w.hop_frames
            ready.append((next_k, queue.window(first, w.window_frames), w.window_frames))
            next_k += 1
        if drop_late and len(ready) > self.max_batch:
            late = len(ready) - self.max_batch
            self.summary.dropped += late
            self._status("warning", f"inference fell behind: dropped {late} window(s) "
                                    f"({self.summary.dropped} so far); try a longer --hop or a faster backend")
            ready = ready[late:]
        for i in range(0, len(ready), self.max_batch):
            self._infer(ready[i:i + self.max_batch])
        queue.forget_before(next_k * w.hop_frames)
        return next_k

    def _infer(self, windows: list[tuple[int, np.ndarray, int]]) -> None:
        batch = np.stack([tile_frames(frames, self.windowing.model_frames) for _, frames, _ in windows])[:, None]
        scores = self.scorer(self.backend.embed(batch))  # [N, K]
        latency_ms = (time.perf_counter() - self._arrived) * 1000.0  # from the audio's arrival
        for (k, frames, count), p in zip(windows, scores):
            t = self.windowing.end_time(k) if count == self.windowing.window_frames \
                else (count - 1) * self.windowing.seconds_per_frame
            self.summary.windows += 1
            self._t = t
            self.sink.window(WindowResult(t=t, top=tuple(top_k(p, self.scorer.labels, self.k)),
                                          latency_ms=latency_ms, dropped=self.summary.dropped))
            for event in self.detector.update(t, self.smoother.update(p)):
                self._emit_event(event)
            self._watch_silence(t, frames)

    def _emit_event(self, event) -> None:
        self.summary.events += event.kind == "start"
        self.sink.event(event)

    def _watch_silence(self, t: float, frames: np.ndarray) -> None:
        """Warn once when the input has been digital silence (every frame at the log floor)."""
        if float(frames.max()) > self._silence:
            self._silent_since, self._silence_warned = None, False
            return
        self._silent_since = t if self._silent_since is None else self._silent_since
        if not self._silence_warned and t - self._silent_since >= SILENCE_WARN_SECONDS:
            self._silence_warned = True
            self._status("warning", f"the input has been digital silence for {t - self._silent_since:.0f} s: "
                                    "is the microphone muted or unplugged?")

    def _status(self, level: str, message: str) -> None:
        getattr(log, "warning" if level == "warning" else "info")(message)
        self.sink.status(Status(t=self._t, level=level, message=message))


def is_live(source: Source) -> bool:
    """A microphone or a real-time file: audio that will not wait for a slow reader."""
    return isinstance(source, MicrophoneSource) or (isinstance(source, FileSource) and not source.fast)


def log_floor_value(frontend: Frontend) -> float:
    """The log-mel value of digital silence."""
    return float(np.log(frontend.log_floor)) if frontend.log == "ln" else 10.0 * float(np.log10(frontend.log_floor))
