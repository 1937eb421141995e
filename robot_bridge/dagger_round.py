"""One HG-DAgger round on the real-proxy (a simulation standing in for the real world) through the bridge's twin
backend: deploy → the scripted operator intervenes → retrain → redeploy.

    python -m robot_bridge.dagger_round checkpoint=runs/stage1 task=pick_place \
        real=[datasets/real_proxy/pick_place] sim=[datasets/sim/pick_place] out=runs/dagger_round

1. intervene: `episodes` episodes (seeds seed … seed+episodes−1) with the `intervene` profile on the twin: the policy
   drives, the scripted operator (the task's expert, robot_bridge/scripted_operator.py) takes over when it drifts
   and hands back; the recorder appends every frame, flagged, to `out/interventions` (or `dataset`).
2. retrain: Stage I from the deployed weights (`init_weights`) on real + interventions + sim with `frames` weights
   (HG-DAgger default: the human's frames only), `steps` steps, into `out/stage1`.
3. redeploy: the old and the new checkpoint through the bridge (deploy_policy profile, no operator) on the same
   `eval_episodes` fresh seeds (eval_seed …): paired real-proxy success before / after, written to `out/round.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from cotrain.data.frame_source import FrameWeights
from robot_bridge.scripted_operator import DriftCriterion

log = logging.getLogger("robot_bridge.dagger_round")


@dataclass
class DaggerRoundConfig:
    checkpoint: str = "???"
    """The deployed policy (a cotrain checkpoint directory)."""
    task: str = "pick_place"
    """Twin task config (a name in configs/task or a yaml path); the env is its real_proxy domain."""
    episodes: int = 20
    """Intervention episodes (seeds `seed` …)."""
    seed: int = 100_000
    """Twin seed of the first intervention episode."""
    operator: DriftCriterion = field(default_factory=DriftCriterion)
    """When the scripted operator takes over and hands back."""
    dataset: str = ""
    """Where the intervention episodes are appended (empty: out/interventions)."""
    real: list[str] = field(default_factory=list)
    """The real (real-proxy) datasets the checkpoint was trained on, trained on again with the interventions."""
    sim: list[str] = field(default_factory=list)
    """The sim datasets of the mixture."""
    alpha: float = 0.2
    """Real fraction of every Stage I batch (interventions count as real)."""
    frames: FrameWeights = field(default_factory=FrameWeights)
    """Frame weights by source (HG-DAgger default: demonstrations and the operator's frames, not the policy's)."""
    steps: int = 2000
    """Stage I fine-tuning steps from the deployed weights."""
    lr: float = 1.0e-4
    """Stage I learning rate of the fine-tune."""
    stage1: dict[str, Any] = field(default_factory=dict)
    """Further Stage I keys (cotrain.stage1.Stage1Config), e.g. {fast: true, device: cuda}."""
    eval_episodes: int = 20
    """Redeploy episodes per checkpoint (paired: the same seeds for both)."""
    eval_seed: int = 200_000
    """Twin seed of the first redeploy episode (fresh: not the intervention seeds)."""
    episode_s: float = 600.0
    """Longest wait for one twin episode, s."""
    out: str = "runs/dagger_round"

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.eval_episodes < 0 or self.steps < 1:
            raise ValueError(f"dagger_round: episodes={self.episodes} and steps={self.steps} must be >= 1, "
                             f"eval_episodes={self.eval_episodes} >= 0")


ConfigStore.instance().store(name="dagger_round_schema", node=DaggerRoundConfig)


def intervene(cfg: DaggerRoundConfig, dataset: Path) -> dict:
    """Step 1: the intervention episodes through ROS; returns the operator's counts and the twin's episodes."""
    from robot_bridge.deploy import DeployConfig, deploy
    from robot_bridge.nodes.operator_node import OperatorNode

    operators: list[OperatorNode] = []

    def add_operator(nodes):
        operators.append(OperatorNode(nodes["franka"], cfg.operator))
        return operators

    episodes = deploy(DeployConfig(
        profile="intervene", robot_config="twin", checkpoint=cfg.checkpoint, dataset=str(dataset),
        episodes=cfg.episodes, episode_s=cfg.episode_s,
        params={"franka": {"twin_env": cfg.task, "twin_seed": cfg.seed}, "teleop": {"input": "none"}}),
        extra_nodes=add_operator)
    op = operators[0]
    return {"episodes": episodes, "operator_commands": len(op.sent), "handbacks": len(op.handbacks),
            "takeovers": op.operator.takeovers}


def retrain(cfg: DaggerRoundConfig, dataset: Path, out: Path) -> Path:
    """Step 2: Stage I from the deployed weights on the mixture with the interventions."""
    from cotrain.data.config import DataConfig
    from cotrain.policies.checkpoint import CONFIG_FILE, MODEL_FILE
    from cotrain.stage1 import Stage1Config, train

    policy = json.loads((Path(cfg.checkpoint) / CONFIG_FILE).read_text())
    s1 = Stage1Config(policy=policy, data=DataConfig(real=[*cfg.real, str(dataset)], sim=list(cfg.sim),
                                                     alpha=cfg.alpha, frames=cfg.frames),
                      steps=cfg.steps, lr=cfg.lr, init_weights=str(Path(cfg.checkpoint) / MODEL_FILE), out=str(out))
    s1 = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(s1), OmegaConf.create(dict(cfg.stage1))))
    return train(s1)


def redeploy(cfg: DaggerRoundConfig, checkpoint: str, dataset: Path) -> float:
    """Step 3: the checkpoint through the bridge on the evaluation seeds; success rate."""
    from robot_bridge.deploy import DeployConfig, deploy

    episodes = deploy(DeployConfig(
        robot_config="twin", checkpoint=checkpoint, dataset=str(dataset), episodes=cfg.eval_episodes,
        episode_s=cfg.episode_s, params={"franka": {"twin_env": cfg.task, "twin_seed": cfg.eval_seed}}))
    return sum(bool(e["success"]) for e in episodes) / max(len(episodes), 1)


def run_round(cfg: DaggerRoundConfig) -> dict:
    from cotrain.runtime import atomic_path

    out = Path(cfg.out)
    dataset = Path(cfg.dataset) if cfg.dataset else out / "interventions"
    summary: dict[str, Any] = {"config": asdict(cfg)}
    summary["intervene"] = intervene(cfg, dataset)
    new = retrain(cfg, dataset, out / "stage1")
    summary["checkpoint_after"] = str(new)
    if cfg.eval_episodes:
        summary["success_before"] = redeploy(cfg, cfg.checkpoint, out / "redeploy_before")
        summary["success_after"] = redeploy(cfg, str(new), out / "redeploy_after")
        print(f"real-proxy success on {cfg.eval_episodes} seeds from {cfg.eval_seed}: "
              f"{100 * summary['success_before']:.1f}% -> {100 * summary['success_after']:.1f}%", flush=True)
    with atomic_path(out / "round.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    return summary


@hydra.main(config_path="../configs", config_name="dagger_round", version_base=None)
def main(dcfg) -> None:
    try:
        run_round(OmegaConf.to_object(dcfg))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"dagger_round: {e}") from None


if __name__ == "__main__":
    main()
