"""One run's record, `<run>/results.json`: per step its status, wall time (summed over calls) and results.

    {"config": {...}, "steps": {"stage1": {"status": "done", "wall_s": 412.3, "checkpoint": "...", ...}, ...}}

A step marked "done" is skipped by a later call; a step cut by a time limit is "partial" and continues from its own
resume state (Stage I / II checkpoints) when the same command runs again. Written atomically after every change.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cotrain.runtime import write_json_atomic


class RunRecord:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self.path = Path(run_dir) / "results.json"
        self.data: dict[str, Any] = {"config": config, "steps": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
            if self.data["config"] != config:
                raise ValueError(f"experiment: {self.path} was started with another config; give another out= "
                                 "(or the same command)")
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def done(self, step: str) -> bool:
        return self.data["steps"].get(step, {}).get("status") == "done"

    def result(self, step: str) -> dict[str, Any]:
        return self.data["steps"].get(step, {})

    @contextmanager
    def timing(self, step: str) -> Iterator[dict[str, Any]]:
        """Run a step: yields its entry to fill (status "done" unless the step sets "partial"); its wall time adds up
        over calls. An exception leaves the entry "partial" with the time spent."""
        entry = self.data["steps"].setdefault(step, {"wall_s": 0.0})
        entry["status"] = "running"
        start = time.perf_counter()
        try:
            yield entry
        except BaseException:
            entry["status"] = "partial"
            raise
        else:
            if entry["status"] == "running":
                entry["status"] = "done"
        finally:
            entry["wall_s"] = round(entry["wall_s"] + time.perf_counter() - start, 2)
            self.save()
