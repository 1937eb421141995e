"""The worker pool steps groups of envs on their own (step_chunk_async/_wait), with the results of step_chunk."""

import numpy as np
import pytest
import torch
from test_rl_overlap import MeanPolicy

from cotrain.data.spec import STATE_KEY
from cotrain.rl.config import RLConfig
from cotrain.rl.rollout import RolloutCollector

pytestmark = pytest.mark.sapien


def make(backend):
    from cotrain.envs import load_task_config, make_env

    return make_env(load_task_config("pick_place"), "sim", obs_mode="state", num_envs=3, seed=0, backend=backend)


@pytest.fixture(scope="module")
def venv():
    env = make("physx_cpu")
    yield env
    env.close()


def test_groups_step_on_their_own_like_step_chunk(venv):
    # compared with fresh envs stepped together (a re-reset env does not repeat its physics bit for bit)
    rng = np.random.default_rng(0)
    actions = rng.normal(0, 0.3, (4, 3, 4, 7)).astype(np.float32)
    reference = make("physx_cpu_serial")
    reference.reset(seeds=[5, 6, 7])
    together = [reference.step_chunk(a) for a in actions]
    reference.close()
    venv.reset(seeds=[5, 6, 7])
    for t, a in enumerate(actions):
        venv.step_chunk_async(a[2:], range(2, 3))  # env 2 starts first and is collected last
        venv.step_chunk_async(a[:2], range(0, 2))
        first, last = venv.step_chunk_wait(range(0, 2)), venv.step_chunk_wait(range(2, 3))
        torch.testing.assert_close(torch.cat([first[0][STATE_KEY], last[0][STATE_KEY]]), together[t][0][STATE_KEY])
        torch.testing.assert_close(torch.cat([first[1], last[1]]), together[t][1])
        assert first[4]["step_s"].shape == (2,) and (last[4]["step_s"] > 0).all()
    with pytest.raises(ValueError, match=r"actions \[2 envs, H, 7\]"):
        venv.step_chunk_async(actions[0], range(0, 2))


def test_grouped_rollout_over_worker_processes(venv):
    # equality with one group is tested on the toy env (tests/test_rl_overlap.py); here: the wiring and timing
    torch.manual_seed(0)
    collector = RolloutCollector(venv, MeanPolicy(chunk_size=4), RLConfig(num_steps=3, rollout_groups=2))
    assert collector.groups == [range(0, 2), range(2, 3)]
    buffer, stats = collector.collect(iteration=0)
    assert buffer.obs[STATE_KEY].shape == (3, 3, 8) and buffer.rewards.shape == (3, 3)
    assert 0 < stats.env_s < stats.collect_s  # per chunk: the slowest worker's own stepping time
    assert stats.env_steps == 3 * 3 * 4
