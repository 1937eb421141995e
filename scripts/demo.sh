#!/usr/bin/env bash
# The whole loop at toy scale on a CPU machine (minutes; CPU rendering is slow): every step is a README command.
# Outputs: datasets/demo/{sim,real_proxy}/pick_place, runs/demo/{encoder,stage1,stage2,eval_*}; with the shipped
# checkpoint (checkpoints/pick_place_vla_flow, see checkpoints/README.md) also runs/demo/shipped_eval_{sim,real_proxy}
# and datasets/demo/real_proxy/pick_place_shipped.
# "real_proxy" is the simulated stand-in for the real world, not a robot.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
rm -rf runs/demo datasets/demo

echo "== 1/8 scripted demos: pick-and-place in sim and in the real-proxy"
$PY -m cotrain.demos task=pick_place domain=sim episodes=4 out=datasets/demo/sim/pick_place
$PY -m cotrain.demos task=pick_place domain=real_proxy episodes=2 seed=500 out=datasets/demo/real_proxy/pick_place

echo "== 2/8 image-encoder pretraining: locate the object and the tray in rendered sim scenes (no demos needed)"
$PY -m cotrain.pretrain_encoder task=pick_place scenes=24 heldout=8 steps=30 batch_size=16 workers=0 \
    out=runs/demo/encoder

echo "== 3/8 Stage I: SFT on the α mixture (real-proxy fraction 0.25)"
$PY -m cotrain.stage1 policy=vla_flow data.sim=[datasets/demo/sim/pick_place] \
    data.real=[datasets/demo/real_proxy/pick_place] data.alpha=0.25 data.batch_size=16 \
    steps=60 warmup_steps=10 log_every=10 save_every=60 init_weights=runs/demo/encoder/image_encoder.safetensors \
    out=runs/demo/stage1

echo "== 4/8 eval of the Stage I checkpoint in sim and in the real-proxy"
for d in sim real_proxy; do
  $PY -m cotrain.eval ckpt=runs/demo/stage1 task=pick_place domain=$d episodes=1 videos=1 \
      out=runs/demo/eval_stage1_$d
done

echo "== 5/8 Stage II: PPO in the twin + β·SFT anchor on the real-proxy demos"
$PY -m cotrain.stage2 init=runs/demo/stage1 task=pick_place real=[datasets/demo/real_proxy/pick_place] \
    rl.beta=0.2 envs=2 iterations=2 rl.num_steps=3 rl.critic_warmup_iterations=1 rl.num_minibatches=2 \
    rl.real_batch_size=8 eval_every=2 eval_episodes=2 save_every=2 out=runs/demo/stage2

echo "== 6/8 eval of the Stage II checkpoint"
$PY -m cotrain.eval ckpt=runs/demo/stage2 task=pick_place domain=real_proxy episodes=1 videos=1 \
    out=runs/demo/eval_stage2_real_proxy
echo "== 7/8 robot_bridge: the Stage II checkpoint served through ROS 2 on the twin backend (the real-proxy env as"
echo "       the arm and camera) for one episode, recorded into the real-proxy dataset"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$(( (RANDOM % 100) + 100 ))
$PY -m robot_bridge.deploy robot_config=twin checkpoint=runs/demo/stage2 \
    dataset=datasets/demo/real_proxy/pick_place episodes=1 episode_s=600 \
    +params.franka.twin_env=pick_place +params.franka.twin_seed=2000
$PY - <<'PY'
from cotrain.data import EpisodeStore, FeatureSpec
s = EpisodeStore.load("datasets/demo/real_proxy/pick_place", FeatureSpec())
print(f"real-proxy dataset now: {s.num_episodes} episodes; last one: {s.provenance[s.num_episodes - 1]}")
PY

# The toy policies above do not succeed (a few training steps). The shipped checkpoint was trained by the same
# pipeline at full scale; its provenance file names the command, commit, data seeds and its measured success.
SHIPPED=checkpoints/pick_place_vla_flow
if [[ -f $SHIPPED/model.safetensors && ( -f $SHIPPED/PROVENANCE.md || -f $SHIPPED/provenance.json ) ]]; then
  EPISODES=8
  # actions per chunk before observing again, as the checkpoint was measured (provenance.json "n_action_steps")
  NSTEPS=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1])).get("n_action_steps", 0))' \
           $SHIPPED/provenance.json 2>/dev/null || echo 0)
  echo "== 8/8 the shipped checkpoint ($SHIPPED): $EPISODES episodes per domain on fresh seeds, videos on"
  for d in sim real_proxy; do
    $PY -m cotrain.eval ckpt=$SHIPPED task=pick_place domain=$d episodes=$EPISODES videos=$EPISODES seed=300000 \
        n_action_steps=$NSTEPS out=runs/demo/shipped_eval_$d
  done
  $PY - <<'PY'
import json
for d in ("sim", "real_proxy"):
    r = json.load(open(f"runs/demo/shipped_eval_{d}/results.json"))["results"]["train"]
    wins = sum(e["success"] for e in r["episodes"])
    print(f"shipped checkpoint, {d:10s}: {wins}/{len(r['episodes'])} episodes succeeded "
          f"(videos: runs/demo/shipped_eval_{d}/videos)")
print("compare with its provenance file and docs/results.md (real_proxy is a simulation, not a robot)")
PY
  echo "       ... and through ROS 2 on the twin for one episode (twin_seed 300000)"
  $PY -m robot_bridge.deploy robot_config=twin checkpoint=$SHIPPED \
      dataset=datasets/demo/real_proxy/pick_place_shipped episodes=1 episode_s=600 \
      +params.franka.twin_env=pick_place +params.franka.twin_seed=300000 +params.policy.n_action_steps=$NSTEPS
else
  echo "== no shipped checkpoint at $SHIPPED yet (see checkpoints/README.md): skipping its evaluation and deployment"
fi
echo "== demo done: see runs/demo (metrics.csv, *.png, eval_*/results.json, eval_*/videos)"
