"""train.vocabulary_head's copies of a clip placed in a window, as a stream has a short sound."""

import numpy as np

from train.vocabulary_head import PLACED, placed_copy

RATE = 16000
WINDOW = 5 * RATE


def test_a_placed_copy_is_part_of_the_clip_inside_a_window_of_something_else():
    context = np.full(RATE, 0.004, dtype=np.float32)  # a constant: plain to tell from silence and white noise
    clip = np.ones(2 * RATE, dtype=np.float32)  # after the copy's gain (>= -20 dB) it stands out above 0.06
    rng = np.random.default_rng(0)
    lengths, starts, around = [], set(), set()
    for _ in range(60):
        window = placed_copy(clip, WINDOW, rng, [context])
        assert window.shape == (WINDOW,) and window.dtype == np.float32
        loud = np.flatnonzero(np.abs(window) > 0.06)
        lengths.append((loud[-1] - loud[0] + 1) / clip.size)
        starts.add(int(loud[0]) * 5 // WINDOW)
        rest = np.concatenate([window[: loud[0]], window[loud[-1] + 1 :]])
        assert np.abs(rest).max(initial=0) < 0.06
        around.add("silence" if not rest.any() else "context" if np.ptp(rest) < 1e-6 else "noise")
    low, high = PLACED["keep"]
    assert low - 0.01 <= min(lengths) and max(lengths) <= high + 0.01 and max(lengths) - min(lengths) > 0.3
    assert len(starts) >= 3  # anywhere in the window
    assert around == {"silence", "context", "noise"}
