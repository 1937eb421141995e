"""cotrain.experiment end to end on a tiny budget (CPU, in-process SAPIEN): every step, results.json, skipping done
steps, and a Stage II cut by the call's time budget that the same command continues."""

import json

import pytest

from cotrain.config import compose, to_object
from cotrain.experiment import run

pytestmark = pytest.mark.sapien
TINY = ["task.max_episode_steps=8", "device=cpu",
        "demos.sim=2", "demos.real=1", "demos.keep_failures=true", "demos.workers=0", "demos.format=npz",
        "encoder.scenes=4", "encoder.heldout=0", "encoder.steps=2", "encoder.batch_size=2", "encoder.workers=0",
        "stage1.policy.d_model=32", "stage1.policy.n_heads=2", "stage1.policy.n_layers=1", "stage1.policy.mlp_ratio=2",
        "stage1.policy.cnn_channels=[8,16]", "stage1.policy.keypoints=4", "stage1.policy.value_hidden=16",
        "stage1.policy.head.num_steps=2", "stage1.policy.head.n_layers=1",
        "stage1.steps=2", "stage1.save_every=1", "stage1.log_every=1", "stage1.warmup_steps=1", "stage1.data.batch_size=4",
        "stage2.envs=1", "stage2.backend=physx_cpu_serial", "stage2.iterations=2", "stage2.save_every=1",
        "stage2.rl.num_steps=2", "stage2.rl.num_minibatches=1", "stage2.rl.update_epochs=1", "stage2.rl.real_batch_size=2",
        "stage2.rl.critic_warmup_iterations=0",
        "eval.episodes=2", "eval.envs=1", "eval.backend=physx_cpu_serial", "eval.n_action_steps=2"]


def call(out, *overrides):
    return run(to_object(compose("experiment", [*TINY, f"out={out}", *overrides])))


def test_runner_runs_every_step_resumes_a_cut_stage2_and_skips_done_steps(tmp_path):
    results = tmp_path / "seed_0" / "results.json"
    assert call(tmp_path, "steps=[demos,encoder,stage1]")
    first = json.loads(results.read_text())["steps"]
    assert first["demos"]["sim"]["episodes"] == 2 and first["demos"]["real_proxy"]["episodes"] == 1
    assert first["stage1"]["checkpoint"].endswith("stage1/ckpt/step_2") and first["stage1"]["steps"] == 2
    assert (tmp_path / "seed_0" / "encoder" / "image_encoder.safetensors").exists()

    # a call whose budget runs out in Stage II: one iteration, a checkpoint, no evaluation yet
    assert not call(tmp_path, "steps=[stage2,eval]", "time_budget_s=0")
    cut = json.loads(results.read_text())["steps"]
    assert cut["stage2"]["status"] == "partial" and cut["stage2"]["iterations_done"] == 1 and "eval" not in cut
    # the same command without the limit goes on from iteration 1, then evaluates both checkpoints
    assert call(tmp_path, "steps=[stage2,eval]")
    done = json.loads(results.read_text())["steps"]
    s2 = done["stage2"]
    assert s2["status"] == "done" and s2["iterations_done"] == 2 and s2["env_steps"] == 2 * 2 * 4
    assert s2["wall_s"] > cut["stage2"]["wall_s"]  # summed over both calls
    assert (tmp_path / "seed_0" / "stage2" / "ckpt" / "step_1").exists()  # kept from the cut call
    # both stages' checkpoints (Stage I done in the first call), both domains, the same seeds: pairable by seed
    assert done["eval"]["stage2"]["checkpoint"].endswith("stage2/ckpt/step_2")
    assert done["eval"]["stage1"]["checkpoint"].endswith("stage1/ckpt/step_2")
    for stage in ("stage1", "stage2"):
        ev = done["eval"][stage]
        assert set(ev) == {"checkpoint", "sim", "real_proxy"}
        for domain in ("sim", "real_proxy"):
            assert ev[domain]["seeds"] == [300000, 300001] and len(ev[domain]["successes"]) == 2
            assert ev[domain]["success_rate"] == sum(ev[domain]["successes"]) / 2
            assert ev[domain]["n_action_steps"] == 2

    # every step done: a re-run changes nothing
    before = results.read_text()
    assert call(tmp_path, "steps=[demos,encoder,stage1,stage2]")
    assert results.read_text() == before


def test_runner_keys_and_a_changed_config_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"stage2.init is set by the runner"):
        to_object(compose("experiment", ["stage2.init=/x"]))
    with pytest.raises(ValueError, match=r"steps may be .* got unknown \['stage3'\]"):
        to_object(compose("experiment", ["steps=[stage1,stage3]"]))
    assert call(tmp_path, "steps=[demos]", "demos.sim=1", "demos.real=0")
    with pytest.raises(ValueError, match="started with another config"):
        call(tmp_path, "steps=[demos]", "demos.sim=2", "demos.real=0")


def write_twin_task(folder) -> str:
    """pick_place (8-step episodes) with a `twin` domain: `sim` before a solid magenta greenscreen background
    (relative to the yaml)."""
    import numpy as np
    import yaml
    from PIL import Image

    from cotrain.envs.config import task_file_mapping

    data = task_file_mapping("configs/task/pick_place.yaml")
    data["domains"]["twin"] = {**data["domains"]["sim"], "background": "empty.png"}
    data["max_episode_steps"] = 8
    Image.fromarray(np.full((128, 128, 3), (255, 0, 255), np.uint8)).save(folder / "empty.png")
    (folder / "pick_place.yaml").write_text(yaml.safe_dump(data))
    return str(folder / "pick_place.yaml")


def test_a_calibrated_task_file_trains_in_its_twin_domain(tmp_path):
    """`task_file=` + `domain=twin`: the sim demos are simulated in the twin (its background behind the scene), the
    encoder and Stage II get the domain, and the background path, relative in the file, is absolute in the run."""
    import numpy as np

    (tmp_path / "calib").mkdir()
    task_file = write_twin_task(tmp_path / "calib")
    cfg = to_object(compose("experiment", [*TINY, f"out={tmp_path}/run", f"task_file={task_file}", "domain=twin",
                                           "eval.domains=[twin,real_proxy]"]))
    assert cfg.task["domains"]["twin"]["background"] == str((tmp_path / "calib" / "empty.png").resolve())
    assert cfg.task["max_episode_steps"] == 8  # the file's, not the `task` group's
    assert run(cfg)  # every step, Stage II and the evaluation in the twin
    record = json.loads((tmp_path / "run" / "seed_0" / "results.json").read_text())["steps"]
    assert record["demos"]["sim"]["domain"] == "twin" and record["demos"]["real_proxy"]["domain"] == "real_proxy"
    assert set(record["eval"]["stage2"]) == {"checkpoint", "twin", "real_proxy"}
    demos = np.load(tmp_path / "run" / "seed_0" / "demos" / "sim.npz")
    magenta = np.all(demos["image"] == (255, 0, 255), axis=-1).mean(axis=(1, 2))
    assert magenta.min() > 0.2  # the background wherever the twin renders no robot or object
    real = np.load(tmp_path / "run" / "seed_0" / "demos" / "real_proxy.npz")
    assert not np.all(real["image"] == (255, 0, 255), axis=-1).any()


def test_twin_domain_keys_are_checked():
    with pytest.raises(ValueError, match="domain=real_proxy trains in the real world's stand-in"):
        to_object(compose("experiment", ["domain=real_proxy"]))
    with pytest.raises(ValueError, match=r"domain 'twin' is not a domain of the task \(known: \['real_proxy', 'sim'\]\)"):
        to_object(compose("experiment", ["domain=twin"]))
    with pytest.raises(ValueError, match="encoder.domain is set by the runner"):
        to_object(compose("experiment", ["encoder.domain=sim2"]))
