"""Ring buffer and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.pipeline.windows import RingBuffer, sliding_windows


def test_ring_buffer_keeps_last_window_in_order() -> None:
    rb = RingBuffer(5, 2)
    for i in range(13):
        rb.append([i, -i])
        assert rb.full == (i >= 4)
        assert rb.last().tolist() == [i, -i]
    np.testing.assert_array_equal(rb.view()[:, 0], [8, 9, 10, 11, 12])
    assert rb.count == 13


def test_view_is_contiguous_read_only_and_copy_free() -> None:
    rb = RingBuffer(4, 3)
    for i in range(7):
        rb.append(np.full(3, i))
    v = rb.view()
    assert v.flags.c_contiguous
    assert not v.flags.writeable
    assert np.shares_memory(v, rb._buf)
    with pytest.raises(ValueError):
        v[0, 0] = 1


def test_clear_starts_over() -> None:
    rb = RingBuffer(3, 1)
    for i in range(5):
        rb.append([i])
    rb.clear()
    assert not rb.full and rb.count == 0


def test_sliding_windows_shape_alignment_and_no_copy() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    w = sliding_windows(x, 4)
    assert w.shape == (7, 4, 2)
    np.testing.assert_array_equal(w[0], x[:4])
    np.testing.assert_array_equal(w[-1], x[-4:])
    assert np.shares_memory(w, x)
    assert sliding_windows(x, 11).shape == (0, 11, 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RingBuffer(0, 3)
    with pytest.raises(ValueError):
        sliding_windows(np.zeros(5), 2)
