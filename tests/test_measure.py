"""Peak memory is measured per run, not inherited from an earlier run in the same process."""

from __future__ import annotations

import numpy as np
import torch

from src.measurement.memory import PeakMemory, rss_mb


def test_peak_is_per_block_not_process_lifetime():
    cpu = torch.device("cpu")
    with PeakMemory(cpu) as big:
        block = np.ones(400 * 2**20 // 8)  # 400 MB, touched
        del block
    with PeakMemory(cpu) as small:
        block = np.ones(40 * 2**20 // 8)
        del block
    assert big.method in ("linux_vmhwm_reset", "rss_sampling")
    assert big.peak_mb - big.start_mb > 350
    # the second block does not inherit the first one's 400 MB peak
    assert small.peak_mb < big.peak_mb - 250
    assert small.peak_mb >= small.start_mb - 50 and rss_mb() is not None
