"""2-rank DDP (gloo over 127.0.0.1 on CPU): the PolicyStep forward syncs PPO + anchor gradients across ranks.

The same checks run under torchrun on GPUs (nccl):
    torchrun --nproc-per-node 2 --master-addr 127.0.0.1 tests/test_ddp_rl.py OUT_DIR [toy|vla]
"""

import itertools
import os
import socket
import sys
from dataclasses import asdict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cotrain.rl.anchor import RealBatchStream
from cotrain.rl.config import RLConfig
from cotrain.rl.distributed import PolicyStep, all_reduce_sum, init_distributed
from cotrain.rl.rollout import RolloutCollector
from doubles.rl_toys import ToyPolicy, ToyRealDataset, ToyVecEnv
from cotrain.rl.trainer import PPOTrainer, training_batch

H = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flat(policy):
    return torch.cat([p.detach().flatten() for p in policy.parameters()]).cpu()


def grads(policy):
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in policy.parameters()]).cpu()


def make_toy(rank):
    policy = ToyPolicy(chunk_size=H)
    return policy, ToyVecEnv(4, H, max_steps=6), ToyRealDataset(32, H)


def make_vla(rank):
    # the Flow-SDE small VLA keeps parameters that neither evaluate nor sft_loss use (rl.ddp_find_unused_parameters)
    from test_policies_support import HEADS, TASKS, TINY_SPEC, stats_of, synthetic_batch, tiny_config

    from cotrain.policies.factory import make_policy

    demos = synthetic_batch(16, chunk=4)
    policy = make_policy(tiny_config(HEADS["flow_sde"], chunk_size=4), TINY_SPEC, stats_of(demos))
    env = ToyVecEnv(4, 4, max_steps=8, image_shape=(TINY_SPEC.image_height, TINY_SPEC.image_width, 3), task=TASKS[0])
    return policy, env, [{k: v[i] for k, v in demos.items()} for i in range(16)]


def train_on_this_rank(out_dir: str, bypass_ddp: bool, device: str, policy_kind: str = "toy") -> None:
    """Run 2 Stage II iterations on this rank's own envs and real batches; save what the test compares."""
    torch.set_num_threads(1)
    info = init_distributed(device=device)
    try:
        rank, world = info.rank, info.world_size
        torch.manual_seed(100 + rank)  # ranks start from different weights: DDP must broadcast rank 0's
        policy, env, real = {"toy": make_toy, "vla": make_vla}[policy_kind](rank)
        policy = policy.to(info.device)
        cfg = RLConfig(num_steps=3, lr=1e-2, value_lr=1e-2, beta=0.2, real_batch_size=4, num_minibatches=2,
                       micro_batches=2)
        collector = RolloutCollector(env, policy, cfg, rank=rank)  # each rank steps its own envs
        stream = RealBatchStream(real, 4, seed=rank)
        init = flat(policy)
        trainer = PPOTrainer(policy, cfg, stream, info)
        if bypass_ddp:  # what calling policy.evaluate/sft_loss outside DDP's forward would do
            trainer.step_module = PolicyStep(policy)
        out = {"init": init, "start": flat(policy)}

        if not bypass_ddp:  # one micro-batch: DDP's gradient = the mean over ranks of the local gradients
            mb = training_batch(collector.collect(0)[0], cfg)
            trainer.real_batches = itertools.repeat(next(stream))
            ddp_step, trainer.step_module = trainer.step_module, PolicyStep(policy)
            trainer.optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(7 + rank)  # the flow SFT loss draws noise and times: same draws on both passes
            trainer.backward_micro_batch(mb)
            local = grads(policy)
            mean = local.clone().to(info.device)
            dist.all_reduce(mean)
            mean /= world
            trainer.step_module = ddp_step
            trainer.optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(7 + rank)
            trainer.backward_micro_batch(mb)
            out |= {"local_grad": local, "mean_grad": mean.cpu(), "ddp_grad": grads(policy)}
            trainer.real_batches = stream

        metrics = []
        for _ in range(2):
            buffer, stats = collector.collect(trainer.iteration)
            metrics.append(trainer.update(buffer))
        summed = all_reduce_sum(asdict(stats), info)
        out |= {"end": flat(policy), "metrics": metrics, "local": asdict(stats), "summed": summed}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # every rank's file exists once any rank returns
    finally:
        dist.destroy_process_group()


def spawned(rank, world, port, out_dir, bypass_ddp, policy_kind):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    train_on_this_rank(out_dir, bypass_ddp, "cpu", policy_kind)


def run(tmp_path, bypass_ddp, policy_kind="toy", world=2):
    mp.spawn(spawned, args=(world, free_port(), str(tmp_path), bypass_ddp, policy_kind), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]


def check_synced(results) -> None:
    r0, r1 = results[0], results[1]
    assert not torch.equal(r0["init"], r1["init"])  # different inits before DDP's broadcast
    assert torch.equal(r0["start"], r1["start"]) and torch.equal(r0["start"], r0["init"])
    assert not torch.equal(r0["local_grad"], r1["local_grad"])  # ranks saw different rollouts and real batches
    for r in results:
        torch.testing.assert_close(r["ddp_grad"], r["mean_grad"], rtol=1e-5, atol=1e-7)
        assert torch.equal(r["end"], r0["end"]) and r["metrics"] == r0["metrics"] and r["summed"] == r0["summed"]
    assert not torch.equal(r0["end"], r0["start"])
    assert r0["summed"]["env_steps"] == sum(r["local"]["env_steps"] for r in results)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_rank_ddp_keeps_weights_identical(tmp_path):
    check_synced(run(tmp_path, bypass_ddp=False))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_rank_ddp_on_the_flow_sde_vla(tmp_path):
    check_synced(run(tmp_path, bypass_ddp=False, policy_kind="vla"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_calls_around_ddp_forward_would_desync_ranks(tmp_path):
    # the previous test has power: without the PolicyStep forward inside DDP the ranks drift apart
    r0, r1 = run(tmp_path, bypass_ddp=True)
    assert not torch.equal(r0["end"], r1["end"])


if __name__ == "__main__":  # under torchrun: tests/test_ddp_rl.py OUT_DIR [toy|vla]
    out_dir, kind = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "toy"
    train_on_this_rank(out_dir, bypass_ddp=False, device="auto", policy_kind=kind)
    if int(os.environ["RANK"]) == 0:
        world = int(os.environ["WORLD_SIZE"])
        check_synced([torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(world)])
        print(f"torchrun DDP check passed on {world} ranks ({'cuda' if torch.cuda.is_available() else 'cpu'})")
