"""Where each episode came from: domain (sim / real_proxy / real), source (expert / teleop / policy / intervention), seed.

Stored beside LeRobot's own metadata as `meta/cotrain_provenance.jsonl`, one line per episode, written in the same
atomic commit as the episode itself (see `writer.py`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cotrain.data.errors import DatasetError

DOMAINS = ("sim", "real_proxy", "real")
REAL_PROXY = "real_proxy"
SOURCES = ("expert", "teleop", "policy", "intervention")
PROVENANCE_FILE = "meta/cotrain_provenance.jsonl"


@dataclass(frozen=True)
class Provenance:
    domain: str
    """sim: the ManiSkill twin; real_proxy: the twin's shifted stand-in for the real world; real: a physical robot."""
    source: str
    """expert: scripted; teleop: a human; policy: an autonomous rollout; intervention: a human correcting a policy."""
    seed: int | None = None
    """Env seed of the episode (None for physical-robot episodes)."""

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"Provenance.domain={self.domain!r}: expected one of {DOMAINS}")
        if self.source not in SOURCES:
            raise ValueError(f"Provenance.source={self.source!r}: expected one of {SOURCES}")


def simulated_in(domain: str) -> str:
    """The provenance domain of an episode simulated in the task config domain `domain`: `real_proxy` there, `sim`
    in every twin domain (`sim`, or a calibrated `twin`)."""
    return REAL_PROXY if domain == REAL_PROXY else "sim"


def append_provenance(root: Path, episode_index: int, prov: Provenance) -> None:
    path = Path(root) / PROVENANCE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"episode_index": episode_index, **asdict(prov)}) + "\n")


def read_provenance(root: Path) -> dict[int, Provenance]:
    """Episode index -> provenance. Datasets not written by cotrain have none (empty dict)."""
    path = Path(root) / PROVENANCE_FILE
    if not path.exists():
        return {}
    out: dict[int, Provenance] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        try:
            d = json.loads(line)
            index = int(d.pop("episode_index"))
            out[index] = Provenance(**d)
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path}:{lineno}: bad provenance line ({e})") from None
    return out
