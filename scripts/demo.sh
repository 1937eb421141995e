#!/usr/bin/env bash
# The whole loop at toy scale. Each step is one of the README's commands; outputs under runs/demo and datasets/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
rm -rf runs/demo datasets/demo; mkdir -p runs/demo datasets/demo

echo "== 1. data: a ManiSkill-recorded trajectory file imported into the LeRobot layout"
$PY scripts/record_maniskill_demo.py runs/demo/maniskill --episodes 2 --steps 20
$PY -m cotrain.data.maniskill_import runs/demo/maniskill/pickcube_random.h5 datasets/demo/sim/pickcube_random \
    --task "pick up the red cube" --domain sim --source policy
$PY - <<'PY'
from cotrain.data import FeatureSpec, Mixture, load_dataset
ds = load_dataset("datasets/demo/sim/pickcube_random", FeatureSpec(), chunk_size=4)
b = Mixture([], [ds], alpha=0.0, batch_size=8, seed=0).batch(0)
print(f"loaded {len(ds)} frames; batch shapes:", {k: tuple(v.shape) for k, v in b.items() if hasattr(v, "shape")})
PY
echo "== demo done"
