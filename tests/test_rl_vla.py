"""Stage II's update on the real small VLA (flow-SDE, flow-noise and token heads), over the toy env."""

import pytest
import torch
from test_policies_support import HEADS, TASKS, TINY_SPEC, stats_of, synthetic_batch, tiny_config

from cotrain.policies import make_policy
from cotrain.rl import PPOTrainer, RealBatchStream, RLConfig, RolloutCollector
from cotrain.rl.toys import ToyVecEnv

H = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("head", sorted(HEADS))
def test_update_on_the_vla_starts_at_ratio_one_and_moves_the_weights(head):
    demos = synthetic_batch(16, chunk=H)
    real = [{k: v[i] for k, v in demos.items()} for i in range(16)]  # dataset items, as load_dataset gives them
    torch.manual_seed(0)
    policy = make_policy(tiny_config(HEADS[head], chunk_size=H), TINY_SPEC, stats_of(demos))
    cfg = RLConfig(num_steps=2, lr=1e-4, value_lr=1e-3, real_batch_size=4, num_minibatches=2, update_epochs=1)
    env = ToyVecEnv(4, H, max_steps=8, image_shape=(TINY_SPEC.image_height, TINY_SPEC.image_width, 3), task=TASKS[0])
    collector = RolloutCollector(env, policy, cfg)
    trainer = PPOTrainer(policy, cfg, RealBatchStream(real, cfg.real_batch_size, seed=0))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    metrics = trainer.update(collector.collect(trainer.iteration)[0])
    assert metrics["initial_ratio_dev"] == 0.0  # evaluate re-scores exactly what sample did
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items())
    changed = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("value_head.") for k in changed) and any(k.startswith("head.") for k in changed)
