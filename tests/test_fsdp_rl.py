"""2-rank FSDP2 (gloo over 127.0.0.1 on CPU): sharded Stage II training matches DDP and single-process training.

Each rank starts from its own random weights (both wrappers must take rank 0's), draws its own rollout and real
batches, and takes the same optimizer steps (2 micro-batches each: gradient sync only on the last) under DDP and
under FSDP2. The GPU version (nccl, memory per rank) is benchmarks/fsdp_check.py.
"""

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cotrain.rl.anchor import RealBatchStream
from cotrain.rl.config import RLConfig
from cotrain.rl.distributed import (
    DistInfo, PolicyStep, clip_grad_norm, full_state_dict, gathered, grad_sync, init_distributed, load_full_state_dict,
    load_local_optimizer_state, local_optimizer_state, savable_policy, shard_units, wrap_step,
)
from cotrain.rl.ppo_loss import policy_loss, value_loss
from cotrain.rl.rollout import RolloutCollector
from doubles.rl_toys import ToyPolicy, ToyRealDataset, ToyVecEnv
from cotrain.rl.trainer import PPOTrainer, make_optimizer, training_batch

H = 2
CFG = RLConfig(num_steps=3, lr=1e-2, value_lr=1e-2, beta=0.2, real_batch_size=4, num_minibatches=2, micro_batches=2,
               norm_adv=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_toy():
    return ToyPolicy(chunk_size=H), ToyVecEnv(4, H, max_steps=6), ToyRealDataset(32, H)


def make_vla():
    from test_policies_support import HEADS, TASKS, TINY_SPEC, stats_of, synthetic_batch, tiny_config

    from cotrain.policies.factory import make_policy

    demos = synthetic_batch(16, chunk=4)
    policy = make_policy(tiny_config(HEADS["flow_sde"], chunk_size=4), TINY_SPEC, stats_of(demos))
    env = ToyVecEnv(4, 4, max_steps=8, image_shape=(TINY_SPEC.image_height, TINY_SPEC.image_width, 3), task=TASKS[0])
    return policy, env, [{k: v[i] for k, v in demos.items()} for i in range(16)]


def vla_units(policy):
    """What SmallVLAPolicy.fsdp_units() would declare: each trunk block, and the head's decoder, whose keys/values
    `memory_kv` computes outside its forward."""
    return {f"trunk.{i}": () for i in range(len(policy.trunk))} | {"head.decoder": ("memory_kv",)}


def micro_loss(step: torch.nn.Module, mb, real: dict, cfg: RLConfig) -> torch.Tensor:
    logprob, _entropy, value, sft = step(mb.obs, mb.aux, real, True)
    pg_loss, _ = policy_loss(logprob, mb.logprobs, mb.advantages, cfg.clip_coef)
    v_loss = value_loss(value, mb.values, mb.returns, cfg.vf_clip_coef, cfg.huber_delta)
    return pg_loss + cfg.vf_coef * v_loss + cfg.beta * sft


def train_steps(step, policy, optimizer, micro, reals, n_steps: int, seed: int) -> list[float]:
    """n_steps optimizer steps on the same data: zero grads, one backward per micro-batch (sync on the last), clip."""
    norms = []
    for s in range(n_steps):
        optimizer.zero_grad(set_to_none=True)
        for k, (mb, real) in enumerate(zip(micro, reals)):
            torch.manual_seed(seed + 10 * s + k)  # the flow SFT loss draws noise and times: same draws in every mode
            with grad_sync(step, sync=k == len(micro) - 1):
                (micro_loss(step, mb, real, CFG) / len(micro)).backward()
        norms.append(float(clip_grad_norm(policy.parameters(), CFG.max_grad_norm)))
        optimizer.step()
    return norms


def rollout_data(make, start: dict, rank: int):
    """This rank's rollout (2 micro-batches) and real batches, sampled by a plain copy of rank 0's weights."""
    policy, env, real = make()
    policy.load_state_dict(start)
    torch.manual_seed(7 + rank)
    batch = training_batch(RolloutCollector(env, policy, CFG, rank=rank).collect(0)[0], CFG)
    micro = [batch.rows(i) for i in torch.tensor_split(torch.arange(len(batch)), 2)]
    stream = RealBatchStream(real, CFG.real_batch_size, seed=rank)
    return micro, [next(stream) for _ in micro]


def case(kind: str, out_dir: str) -> None:
    """Every mode trains from this rank's own init on this rank's data; results land in out_dir/rank{r}.pt."""
    torch.set_num_threads(1)
    info = init_distributed(device="cpu")
    try:
        rank = info.rank
        make = {"toy": make_toy, "vla": make_vla}[kind]
        torch.manual_seed(100 + rank)  # ranks start from different weights
        own_init = make()[0].state_dict()
        start = {k: v.clone() for k, v in own_init.items()}
        for v in start.values():
            dist.broadcast(v, src=0)
        micro, reals = rollout_data(make, start, rank)
        out = {"start": start, "init": own_init, "micro": micro, "reals": reals}
        modes = ["ddp", "fsdp2"] + (["fsdp2_units"] if kind == "vla" else [])
        for mode in modes:
            policy, env, _ = make()
            policy.load_state_dict(own_init)
            if mode == "fsdp2_units":
                policy.fsdp_units = lambda p=policy: vla_units(p)
            step = wrap_step(policy, info, find_unused_parameters=True, data_parallel=mode.removesuffix("_units"))
            opt = make_optimizer(policy, CFG)
            norms = train_steps(step, policy, opt, micro, reals, 2, seed=1000 * rank)
            out[mode] = {"after_2": full_state_dict(policy), "norms": norms, "sharded": type(step) is PolicyStep}
            out[mode] |= check_sampling(policy, env, rank)
            norms += train_steps(step, policy, opt, micro, reals, 1, seed=1000 * rank + 500)
            out[mode] |= {"end": full_state_dict(policy), "norms": norms}
            if mode == "fsdp2_units":
                out |= check_resume(policy, opt, step, make, info, micro, reals, out_dir)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def check_sampling(policy, env, rank: int) -> dict:
    """Collective sampling (same calls on every rank), then a rollout inside `gathered`, where rank 0 samples once
    more than rank 1 (what rank-dependent bootstrap values and rank-0 evaluation do) without deadlocking."""
    obs = env.reset(seeds=[50 + rank + i for i in range(env.num_envs)])
    torch.manual_seed(3 + rank)
    actions = policy.sample(obs, explore=True)[0]
    with gathered(policy):
        torch.manual_seed(5 + rank)
        buffer, _ = RolloutCollector(env, policy, CFG, rank=rank).collect(1)
        if rank == 0:
            policy.sample(obs, explore=False)
    return {"actions": actions, "rollout_logprobs": buffer.logprobs, "rollout_values": buffer.values}


def check_resume(policy, opt, step, make, info: DistInfo, micro, reals, out_dir: str) -> dict:
    """Checkpoint round trip (gathered weights -> save_checkpoint -> load_policy -> load_full_state_dict into a fresh
    sharded policy) and the per-rank optimizer shards (torch.save, weights_only load): one more step must agree."""
    from cotrain.policies import load_policy, save_checkpoint

    full = full_state_dict(policy)
    ckpt = os.path.join(out_dir, "ckpt")
    to_save = savable_policy(policy, info.rank)  # collective; an unsharded copy on rank 0, None elsewhere
    assert (to_save is None) == (info.rank != 0) and to_save is not policy
    if info.rank == 0:
        save_checkpoint(ckpt, to_save, step=3)
    dist.barrier()
    loaded = load_policy(ckpt).state_dict()
    opt_file = os.path.join(out_dir, f"opt{info.rank}.pt")
    torch.save(local_optimizer_state(opt), opt_file)
    torch.manual_seed(200 + info.rank)
    fresh = make()[0]
    fresh.fsdp_units = lambda p=fresh: vla_units(p)
    fresh_step = wrap_step(fresh, info, find_unused_parameters=True, data_parallel="fsdp2")
    load_full_state_dict(fresh, loaded if info.rank == 0 else {})
    fresh_opt = make_optimizer(fresh, CFG)
    load_local_optimizer_state(fresh_opt, torch.load(opt_file, weights_only=True))
    reloaded = full_state_dict(fresh)
    train_steps(step, policy, opt, micro, reals, 1, seed=77)
    train_steps(fresh_step, fresh, fresh_opt, micro, reals, 1, seed=77)
    return {"full": full, "loaded": loaded, "reloaded": reloaded, "continued": full_state_dict(policy),
            "resumed": full_state_dict(fresh)}


def spawned(rank: int, world: int, port: int, out_dir: str, kind: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    case(kind, out_dir)


def run(tmp_path, kind: str, world: int = 2) -> list[dict]:
    mp.spawn(spawned, args=(world, free_port(), str(tmp_path), kind), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


def assert_state_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


def single_process_reference(r0: dict, r1: dict, steps: list[int]) -> dict:
    """One process, rank 0's start weights, each micro-batch = both ranks' rows, real batch = both ranks' batches."""
    from cotrain.rl.rollout import Batch

    def cat(a, b):
        if a is None:  # prox_logprobs: filled by the trainer
            return None
        if isinstance(a, torch.Tensor):
            return torch.cat([a, b])
        if isinstance(a, list):
            return a + b
        return {k: cat(a[k], b[k]) for k in a}

    policy = ToyPolicy(chunk_size=H)
    policy.load_state_dict(r0["start"])
    micro = [Batch(**{f: cat(getattr(a, f), getattr(b, f)) for f in Batch.__dataclass_fields__})
             for a, b in zip(r0["micro"], r1["micro"])]
    reals = [cat(a, b) for a, b in zip(r0["reals"], r1["reals"])]
    step, opt = PolicyStep(policy), make_optimizer(policy, CFG)
    # the ranks' SFT noise seeds do not matter for the toy (its SFT loss is deterministic)
    train_steps(step, policy, opt, micro, reals, steps[0], seed=0)
    after_2 = {k: v.clone() for k, v in policy.state_dict().items()}
    train_steps(step, policy, opt, micro, reals, steps[1], seed=0)
    return {"after_2": after_2, "end": policy.state_dict()}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fsdp2_matches_ddp_and_single_process_on_the_toy(tmp_path):
    r0, r1 = run(tmp_path, "toy")
    assert not torch.equal(r0["init"]["trunk.0.weight"], r1["init"]["trunk.0.weight"])  # both take rank 0's
    assert r0["fsdp2"]["sharded"] and r1["fsdp2"]["end"] == {}  # full state dict only on rank 0
    ref = single_process_reference(r0, r1, [2, 1])
    for mode in ("ddp", "fsdp2"):
        assert_state_close(r0[mode]["after_2"], ref["after_2"], rtol=1e-5, atol=1e-6)
        assert_state_close(r0[mode]["end"], ref["end"], rtol=1e-5, atol=1e-6)
        assert r0[mode]["norms"] == pytest.approx(r1[mode]["norms"], rel=1e-6)  # one global norm on every rank
    assert not torch.equal(r0["fsdp2"]["end"]["mean_head.weight"], r0["start"]["mean_head.weight"])
    for r in (r0, r1):  # the sharded policy samples exactly like the replicated one, collectively and gathered
        for key in ("actions", "rollout_logprobs", "rollout_values"):
            torch.testing.assert_close(r["fsdp2"][key], r["ddp"][key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(r0["fsdp2"]["actions"], r1["fsdp2"]["actions"])  # ranks sampled their own envs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fsdp2_on_the_flow_sde_vla_matches_ddp_and_resumes(tmp_path):
    r0, r1 = run(tmp_path, "vla")
    for mode in ("fsdp2", "fsdp2_units"):  # the policy's units (default: trunk blocks) and declared ones
        assert_state_close(r0[mode]["after_2"], r0["ddp"]["after_2"], rtol=1e-4, atol=1e-5)
        assert_state_close(r0[mode]["end"], r0["ddp"]["end"], rtol=1e-4, atol=5e-5)  # Adam: 3 steps of lr 1e-2
        for r in (r0, r1):
            torch.testing.assert_close(r[mode]["rollout_logprobs"], r["ddp"]["rollout_logprobs"], rtol=1e-4, atol=1e-4)
    assert not torch.equal(r0["ddp"]["end"]["head.velocity_out.weight"], r0["start"]["head.velocity_out.weight"])
    for r in (r0, r1):  # the checkpoint holds exactly the gathered weights, on every rank that loads it
        assert_state_close(r["loaded"], r0["full"], rtol=0, atol=0)
    assert_state_close(r0["reloaded"], r0["full"], rtol=0, atol=0)  # loaded back into a fresh sharded policy
    assert_state_close(r0["resumed"], r0["continued"], rtol=0, atol=0)  # + optimizer shards: the same next step
    assert not torch.equal(r0["continued"]["head.velocity_out.weight"], r0["full"]["head.velocity_out.weight"])


class BlocksPolicy(ToyPolicy):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(2))
        self.head = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(2, 2)]))  # nested: not a default unit


def test_shard_units_default_to_direct_module_list_entries_and_check_declared_names():
    assert shard_units(BlocksPolicy()) == {"blocks.0": (), "blocks.1": ()}
    assert shard_units(ToyPolicy()) == {}
    policy, _, _ = make_vla()
    policy.fsdp_units = lambda: {"head.decoder": ("memory_kv",)}
    assert shard_units(policy) == {"head.decoder": ("memory_kv",)}
    policy.fsdp_units = lambda: {"head.decodr": ()}
    with pytest.raises(ValueError, match="'head.decodr' is not a submodule"):
        shard_units(policy)
    policy.fsdp_units = lambda: {"head.decoder": ("kv_memory",)}
    with pytest.raises(ValueError, match=r"'head.decoder' \(Decoder\) has no method \['kv_memory'\]"):
        shard_units(policy)


def test_single_process_fsdp2_is_the_plain_step_and_bad_values_are_refused():
    policy = ToyPolicy()
    step = wrap_step(policy, DistInfo(), find_unused_parameters=False, data_parallel="fsdp2")
    assert type(step) is PolicyStep and step.policy is policy
    with pytest.raises(ValueError, match=r"rl.data_parallel must be one of ddp\|fsdp2, got 'fsdp'"):
        RLConfig(data_parallel="fsdp")  # checked once, where the config is parsed


def trainer_case(out_dir: str) -> None:
    """PPOTrainer.update for 2 iterations under each mode from rank-own inits: same weights and metrics."""
    torch.set_num_threads(1)
    info = init_distributed(device="cpu")
    try:
        rank, out = info.rank, {}
        torch.manual_seed(100 + rank)
        own_init = ToyPolicy(chunk_size=H).state_dict()
        for mode in ("ddp", "fsdp2"):
            cfg = dataclasses.replace(CFG, data_parallel=mode)
            policy, env, real = make_toy()
            policy.load_state_dict(own_init)
            trainer = PPOTrainer(policy, cfg, RealBatchStream(real, 4, seed=rank), info)
            collector = RolloutCollector(env, policy, cfg, rank=rank)
            torch.manual_seed(9 + rank)
            metrics = []
            for _ in range(2):
                with gathered(policy):
                    buffer, _ = collector.collect(trainer.iteration)
                metrics.append(trainer.update(buffer))
            out[mode] = {"end": full_state_dict(policy), "metrics": metrics,
                         "optimizer": local_optimizer_state(trainer.optimizer)}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def trainer_spawned(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    trainer_case(out_dir)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ppo_trainer_under_fsdp2_matches_ddp(tmp_path):
    mp.spawn(trainer_spawned, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert_state_close(r0["fsdp2"]["end"], r0["ddp"]["end"], rtol=1e-5, atol=1e-6)
    for a, b in zip(r0["fsdp2"]["metrics"], r0["ddp"]["metrics"]):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6, nan_ok=True) for k in a)
