#!/usr/bin/env bash
# The whole loop at toy scale on a CPU machine (minutes; CPU rendering is slow): every step is a README command.
# Outputs: datasets/demo/{sim,real_proxy}/pick_place, runs/demo/{encoder,stage1,stage2,eval_*}.
# "real_proxy" is the simulated stand-in for the real world, not a robot.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-offline}
rm -rf runs/demo datasets/demo

echo "== 1/7 scripted demos: pick-and-place in sim and in the real-proxy"
$PY -m cotrain.demos task=pick_place domain=sim episodes=4 out=datasets/demo/sim/pick_place
$PY -m cotrain.demos task=pick_place domain=real_proxy episodes=2 seed=500 out=datasets/demo/real_proxy/pick_place

echo "== 2/7 image-encoder pretraining: locate the object and the tray in rendered sim scenes (no demos needed)"
$PY -m cotrain.pretrain_encoder task=pick_place scenes=24 heldout=8 steps=30 batch_size=16 workers=0 \
    out=runs/demo/encoder

echo "== 3/7 Stage I: SFT on the α mixture (real-proxy fraction 0.25)"
$PY -m cotrain.stage1 policy=vla_flow data.sim=[datasets/demo/sim/pick_place] \
    data.real=[datasets/demo/real_proxy/pick_place] data.alpha=0.25 data.batch_size=16 \
    steps=60 warmup_steps=10 log_every=10 save_every=60 init_weights=runs/demo/encoder/image_encoder.safetensors \
    out=runs/demo/stage1

echo "== 4/7 eval of the Stage I checkpoint in sim and in the real-proxy"
for d in sim real_proxy; do
  $PY -m cotrain.eval ckpt=runs/demo/stage1/ckpt/last task=pick_place domain=$d episodes=1 videos=1 \
      out=runs/demo/eval_stage1_$d
done

echo "== 5/7 Stage II: PPO in the twin + β·SFT anchor on the real-proxy demos"
$PY -m cotrain.stage2 init=runs/demo/stage1/ckpt/last task=pick_place real=[datasets/demo/real_proxy/pick_place] \
    rl.beta=0.2 envs=2 iterations=2 rl.num_steps=3 rl.critic_warmup_iterations=1 rl.num_minibatches=2 \
    rl.real_batch_size=8 eval_every=2 eval_episodes=2 save_every=2 out=runs/demo/stage2

echo "== 6/7 eval of the Stage II checkpoint"
$PY -m cotrain.eval ckpt=runs/demo/stage2/ckpt/iter_2 task=pick_place domain=real_proxy episodes=1 videos=1 \
    out=runs/demo/eval_stage2_real_proxy
echo "== 7/7 robot_bridge: the Stage II checkpoint served through ROS 2 on the twin backend (the real-proxy env as"
echo "       the arm and camera) for one episode, recorded into the real-proxy dataset"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=$(( (RANDOM % 100) + 100 ))
$PY -m robot_bridge.deploy robot_config=twin checkpoint=runs/demo/stage2/ckpt/iter_2 \
    dataset=datasets/demo/real_proxy/pick_place episodes=1 episode_s=600 \
    +params.franka.twin_env=pick_place +params.franka.twin_seed=2000
$PY - <<'PY'
from cotrain.data import EpisodeStore, FeatureSpec
s = EpisodeStore.load("datasets/demo/real_proxy/pick_place", FeatureSpec())
print(f"real-proxy dataset now: {s.num_episodes} episodes; last one: {s.provenance[s.num_episodes - 1]}")
PY
echo "== demo done: see runs/demo (metrics.csv, *.png, eval_*/results.json, eval_*/videos)"
