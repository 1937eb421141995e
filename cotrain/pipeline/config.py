"""The experiment runner's typed config (`configs/experiment.yaml`; schema `experiment_schema`).

The library configs of the steps are nested whole (`encoder`, `stage1`, `stage2`): every key of the entry points is
available under the same name. The runner owns the keys that wire the steps together (output directories, what to
resume, the Stage I checkpoint Stage II starts from, the pretrained encoder Stage I starts from, the demo datasets,
the task and the seeds); setting one of them is refused with the key's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cotrain.pretrain_encoder import EncoderPretrainConfig
from cotrain.stage1 import Stage1Config
from cotrain.errors import check_choice
from cotrain.stage2 import EnvBackend, Stage2Config

STEPS = ("demos", "encoder", "stage1", "stage2", "eval")
"""The named steps, in the order they run."""
DEMO_FORMATS = ("lerobot", "npz")


@dataclass
class DemosStep:
    sim: int = 100
    """Successful scripted-expert episodes in the sim domain."""
    real: int = 20
    """Successful episodes in the real-proxy domain (the simulated stand-in for real teleoperation)."""
    sim_seed: int = 0
    """First seed of the sim demos."""
    real_seed: int = 50_000
    """First seed of the real-proxy demos."""
    dart_noise_std: float = 0.0
    """DART noise (m/step) on the sim demos' executed actions (`cotrain.demos`); the real-proxy demos get none."""
    keep_failures: bool = False
    """Also keep episodes the expert failed (tests with short episodes)."""
    workers: int = 16
    """Env processes running expert attempts (0: one env in this process)."""
    format: str = "lerobot"
    """lerobot: LeRobot datasets (`cotrain.data.DatasetWriter`); npz: one NumPy archive per domain, for machines
    without LeRobot's dataset writer. Either way Stage I and Stage II read the demos into memory."""

    def __post_init__(self) -> None:
        if self.format not in DEMO_FORMATS:
            raise ValueError(f"experiment: demos.format must be one of {DEMO_FORMATS}, got {self.format!r}")
        if self.sim < 1 or self.real < 0 or self.workers < 0:
            raise ValueError("experiment: demos.sim must be >= 1, demos.real and demos.workers >= 0")


@dataclass
class EvalStep:
    episodes: int = 200
    """Fresh episodes per domain and checkpoint; episode i uses seed + i in both domains."""
    seed: int = 300_000
    """First evaluation seed (far from the demo, encoder and Stage II seeds)."""
    n_action_steps: int = 0
    """Actions executed from each chunk before the policy observes again (0 = the whole chunk), as `cotrain.eval`."""
    checkpoints: list[str] = field(default_factory=lambda: ["stage1", "stage2"])
    """Which stages' final checkpoints to evaluate (each once its step is done, in this call or an earlier one)."""
    domains: list[str] = field(default_factory=lambda: ["sim", "real_proxy"])
    envs: int = 16
    """Env worker processes of the evaluation's vector env."""
    backend: str = "physx_cpu"  # EnvBackend (checked in __post_init__)
    """physx_cpu (one process per env) or physx_cpu_serial (in-process, tests)."""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.envs < 1:
            raise ValueError("experiment: eval.episodes and eval.envs must be >= 1")
        check_choice(self.backend, EnvBackend, "experiment: eval.backend")
        bad = [c for c in self.checkpoints if c not in ("stage1", "stage2")]
        if bad:
            raise ValueError(f"experiment: eval.checkpoints may name stage1 and stage2, got {bad}")


@dataclass
class ExperimentConfig:
    task: dict[str, Any] = field(default_factory=dict)
    """Task config (configs/task/*.yaml)."""
    task_file: str | None = None
    """A task config file used instead of `task`: the calibrated one `python -m cotrain.calibrate` writes (with its
    `twin` domain); relative paths in it are taken from its folder."""
    domain: str = "sim"
    """The twin domain every training step simulates: the sim demos, the encoder's scenes and Stage II's rollouts
    (`sim`, or a calibrated `twin`); never the real-proxy. Evaluation runs in `eval.domains`."""
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    """Steps to run (in the order of STEPS whatever the order here); a step not listed is not run, and a later step
    that needs its output takes it from the run directory when an earlier call made it (else: an error)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """One run per seed, in sequence, each in `out/seed_<s>`: Stage I's and Stage II's seed and the batch order."""
    out: str = "runs/experiment"
    time_budget_s: float | None = None
    """Wall-clock seconds of this call: the call's first step always starts, later ones only while some remain; Stage
    II stops with a checkpoint when they run out (its time_budget_s: at least one iteration), and the same command
    run again continues. None: no limit."""
    device: str = "auto"
    """auto | cpu | cuda, for every step."""
    demos: DemosStep = field(default_factory=DemosStep)
    encoder: EncoderPretrainConfig = field(default_factory=EncoderPretrainConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    eval: EvalStep = field(default_factory=EvalStep)

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ValueError(f"experiment: steps may be {list(STEPS)}, got unknown {unknown}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"experiment: seeds must be a non-empty list of distinct seeds, got {self.seeds}")
        if self.time_budget_s is not None and self.time_budget_s < 0:
            raise ValueError(f"experiment: time_budget_s must be >= 0 or null, got {self.time_budget_s}")
        refuse_runner_keys(self)
        if self.task_file is not None:
            from cotrain.envs.config import task_file_mapping

            self.task = task_file_mapping(self.task_file)
        if self.domain == "real_proxy":
            raise ValueError("experiment: domain=real_proxy trains in the real world's stand-in; train in a twin domain")
        if self.task:
            from cotrain.stage2 import parse_task

            known = parse_task(self.task).domains
            for name in [self.domain, *self.eval.domains]:
                if name not in known:
                    raise ValueError(f"experiment: domain {name!r} is not a domain of the task (known: {sorted(known)})")

    @property
    def ordered_steps(self) -> list[str]:
        return [s for s in STEPS if s in self.steps]


RUNNER_KEYS = {
    "encoder": {"task": {}, "domain": "sim", "policy": {}, "out": EncoderPretrainConfig.out, "seed": 0, "device": "auto"},
    "stage1": {"out": Stage1Config.out, "resume": None, "init_weights": None, "seed": 0, "device": "auto"},
    "stage2": {"init": None, "task": {}, "domain": "sim", "real": [], "out": Stage2Config.out, "resume": None, "seed": 0,
               "time_budget_s": None, "device": "auto"},
}
"""Keys of the nested library configs that the runner sets (with their defaults, which a config must leave)."""


def refuse_runner_keys(cfg: ExperimentConfig) -> None:
    """One clear error for a runner-owned key set in a nested step config."""
    for step, keys in RUNNER_KEYS.items():
        for key, default in keys.items():
            if getattr(getattr(cfg, step), key) != default:
                raise ValueError(f"experiment: {step}.{key} is set by the runner (the run directory, the seeds, the "
                                 f"top-level task / domain / device / time_budget_s); leave it out of the config")
    data = cfg.stage1.data
    if data.real or data.sim or data.seed != 0:
        raise ValueError("experiment: stage1.data.real / sim / seed are set by the runner (its demos and seeds)")
