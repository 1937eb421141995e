"""Run metrics: a local CSV (always), wandb (offline by default), and PNG curves at the end of a run.

    log = MetricsLogger(out_dir, WandbConfig(), run_config=resolved_dict)
    log.log(step, {"train/loss": 0.3})
    log.plot("train/loss")                      # -> out_dir/train_loss.png
    log.close()
"""

from __future__ import annotations

import csv
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrain.runtime import atomic_path

_YLABEL_CHARS = 40  # characters per y-label line that fit beside a 4-inch-high axis at 10 pt


@dataclass
class WandbConfig:
    mode: str = "offline"
    """offline (default: logs under the run dir, sync later with `wandb sync`), online, or disabled."""
    project: str = "cotrain"
    """wandb project name."""

    def __post_init__(self) -> None:
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb.mode={self.mode!r}: expected offline, online or disabled")


class MetricsLogger:
    def __init__(self, out_dir: str | Path, wandb_cfg: WandbConfig, run_config: dict | None = None,
                 resume: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if resume and self.csv_path.exists():
            with open(self.csv_path) as f:
                self.rows = [{k: _num(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
            for r in self.rows:
                r["step"] = int(r["step"])
        self._run = None
        if wandb_cfg.mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._run = wandb.init(project=wandb_cfg.project, mode=wandb_cfg.mode, dir=str(self.out_dir),
                                   config=run_config or {}, resume="allow" if resume else None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        self._write_csv()
        if self._run is not None:
            self._run.log(metrics, step=step)

    def _write_csv(self) -> None:
        keys = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)

    def series(self, key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
        pts = [(r[x_key], r[key]) for r in self.rows if key in r and x_key in r and not math.isnan(r[key])]
        return [p[0] for p in pts], [p[1] for p in pts]

    def plot(self, keys: list[str] | str, x_key: str = "step", name: str | None = None,
             ylabel: str | None = None, logy: bool = False) -> Path | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [keys] if isinstance(keys, str) else keys
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for key in keys:
            xs, ys = self.series(key, x_key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=key)
                drawn = True
        if not drawn:
            plt.close(fig)
            return None
        ax.set_xlabel(x_key)
        # wrapped to the axis height: tight_layout makes room beside the axis, never along it
        ax.set_ylabel(textwrap.fill(ylabel or (keys[0] if len(keys) == 1 else "value"), width=_YLABEL_CHARS))
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        path = self.out_dir / f"{name or keys[0].replace('/', '_')}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")
