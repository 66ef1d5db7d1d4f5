"""Peak host memory of this process over a block of work (what a latency result reports as peak RSS)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any


def _rss_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"{field_name}:\s+(\d+) kB", text)
    return int(match.group(1)) if match else None


class PeakHostMemory:
    """RSS high-water mark of this process over a ``with`` block.

    Linux keeps the mark (VmHWM) and lets a process reset it by writing 5 to /proc/self/clear_refs;
    where that fails, a thread samples VmRSS every 2 ms (which can miss a short spike).
    """

    def __init__(self) -> None:
        self.method = ""
        self.start_kib: int | None = None
        self.peak_kib: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakHostMemory:
        self.start_kib = _rss_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM, reset per run via /proc/self/clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self.peak_kib = self.start_kib
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            now = _rss_kib("VmRSS")
            if now is not None and (self.peak_kib is None or now > self.peak_kib):
                self.peak_kib = now

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak_kib = _rss_kib("VmHWM")

    def as_dict(self) -> dict[str, Any]:
        def mib(kib: int | None) -> float | None:
            return round(kib / 1024, 1) if kib is not None else None

        return {"host_peak_rss_mib": mib(self.peak_kib), "host_rss_at_start_mib": mib(self.start_kib),
                "host_method": self.method}
