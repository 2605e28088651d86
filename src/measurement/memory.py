"""Peak memory of one run, measured per run even when many runs share a process.

`ru_maxrss` is the process's lifetime peak, so in a multirun every run after the largest would
inherit its peak. On Linux we reset the kernel's high-water mark (VmHWM) at the start of each run
by writing 5 to /proc/self/clear_refs and read it at the end. Where that is not possible we fall
back to a sampling thread. On CUDA the figure is the allocator's peak for the run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


class PeakMemory:
    """Context manager: `peak_mb` (peak resident memory during the block), `start_mb`, `method`."""

    def __init__(self, device: torch.device, sample_every_s: float = 0.02) -> None:
        self.device = device
        self.sample_every_s = sample_every_s
        self.peak_mb: float | None = None
        self.start_mb: float | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.method = "cuda_max_memory_allocated"
            return self
        self.start_mb = rss_mb()
        try:
            _CLEAR_REFS.write_text("5")
            self.method = "linux_vmhwm_reset"
        except OSError:
            self.method = "rss_sampling"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, rss_mb() or 0.0)
            self._stop.wait(self.sample_every_s)

    def so_far(self) -> float | None:
        """The peak up to now, inside the block: what a checkpoint carries over to a resumed run."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self._thread is not None:
            return max(self._sampled, rss_mb() or 0.0)
        kb = _status_kb("VmHWM")
        return kb / 1024 if kb is not None else None

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._sampled, rss_mb() or 0.0)
        else:
            kb = _status_kb("VmHWM")
            self.peak_mb = kb / 1024 if kb is not None else None
