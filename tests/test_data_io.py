"""LeRobot dataset write/read through the library, provenance, atomic commits, and bad-input errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cotrain.data import (
    ACTION_KEY,
    IMAGE_KEY,
    STATE_KEY,
    TASK_KEY,
    DatasetError,
    DatasetWriter,
    EpisodeStore,
    FeatureSpec,
    Provenance,
    load_dataset,
    open_lerobot,
)

SPEC = FeatureSpec()


def make_episode(rng, length, task="pick up the red cube"):
    """Smooth images (codec-friendly) with a per-frame brightness code, random state/action."""
    yy, xx = np.mgrid[0:128, 0:128]
    frames = []
    for t in range(length):
        img = np.stack([(xx + 4 * t) % 256, (yy * 2) % 256, np.full_like(xx, 40 + 5 * t)], -1).astype(np.uint8)
        frames.append((img, rng.standard_normal(8).astype(np.float32), rng.uniform(-1, 1, 7).astype(np.float32), task))
    return frames


def write(root, episodes, provs, **kw):
    with DatasetWriter(root, SPEC, **kw) as w:
        for frames, prov in zip(episodes, provs):
            for f in frames:
                w.add_frame(*f)
            w.save_episode(prov)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("ds") / "pick"
    episodes = [make_episode(rng, 12), make_episode(rng, 7, task="place it in the bowl")]
    provs = [Provenance("sim", "expert", 3), Provenance("real_proxy", "teleop", 4)]
    write(root, episodes, provs, commit_every=2)
    return root, episodes, provs


def test_roundtrip_values_images_tasks_provenance(written):
    root, episodes, provs = written
    store = EpisodeStore.load(root, SPEC)
    flat = [f for ep in episodes for f in ep]
    assert len(store) == len(flat) == 19 and store.num_episodes == 2
    np.testing.assert_array_equal(store.state, np.stack([f[1] for f in flat]))
    np.testing.assert_array_equal(store.action, np.stack([f[2] for f in flat]))
    assert store.task == [f[3] for f in flat]
    err = np.abs(store.images.astype(int) - np.stack([f[0] for f in flat]).astype(int))
    assert err.mean() < 3.0, f"mean abs pixel error {err.mean():.2f} exceeds codec tolerance"
    assert store.provenance == {0: provs[0], 1: provs[1]}


def test_chunks_match_lerobot_delta_timestamps(written):
    root, episodes, _ = written
    ours = load_dataset(root, SPEC, chunk_size=4)
    theirs = open_lerobot(root, SPEC, chunk_size=4)
    for i in (0, 9, 11, 12, 18):  # episode interior, last frames of ep 0, first and last of ep 1
        a, b = ours[i], theirs[i]
        np.testing.assert_array_equal(a[ACTION_KEY].numpy(), b[ACTION_KEY].numpy())
        np.testing.assert_array_equal(a["action_is_pad"].numpy(), b["action_is_pad"].numpy())
        np.testing.assert_array_equal(a[STATE_KEY].numpy(), b[STATE_KEY].numpy())
        assert a[TASK_KEY] == b[TASK_KEY]
        img_b = (b[IMAGE_KEY].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(a[IMAGE_KEY].numpy().astype(float) - img_b).max() <= 1
    # frame 11 is the last of episode 0: its chunk repeats its own action and pads 3
    item = ours[11]
    assert item["action_is_pad"].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(item[ACTION_KEY][1].numpy(), episodes[0][11][2])


def test_append_to_existing_dataset(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "real"
    write(root, [make_episode(rng, 5)], [Provenance("real", "teleop")])
    write(root, [make_episode(rng, 6)], [Provenance("real", "intervention")])
    store = EpisodeStore.load(root, SPEC)
    assert len(store) == 11 and store.num_episodes == 2
    assert store.provenance[1].source == "intervention"


def test_killed_writer_leaves_committed_episodes_loadable(tmp_path):
    """Two episodes committed, the process is SIGKILLed while the third is being written."""
    root = tmp_path / "rec"
    script = textwrap.dedent(f"""
        import os, sys, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_data_io import make_episode, SPEC
        from cotrain.data import DatasetWriter, Provenance
        rng = np.random.default_rng(2)
        w = DatasetWriter({str(root)!r}, SPEC, commit_every=1)
        for ep in range(3):
            for f in make_episode(rng, 6):
                w.add_frame(*f)
            if ep == 2:
                print("MID", flush=True)
                import time; time.sleep(60)
            w.save_episode(Provenance("real", "teleop"))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "MID"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = EpisodeStore.load(root, SPEC)
    assert store.num_episodes == 2 and len(store) == 12


def test_swap_interrupted_between_renames_is_recovered(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "d"
    write(root, [make_episode(rng, 4)], [Provenance("sim", "expert", 0)])
    root.rename(tmp_path / ".d.old")  # crash after the first rename of a swap
    assert EpisodeStore.load(root, SPEC).num_episodes == 1


def test_aborted_batch_keeps_earlier_commit(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "d"
    write(root, [make_episode(rng, 4)], [Provenance("sim", "expert", 0)])
    with pytest.raises(RuntimeError):
        with DatasetWriter(root, SPEC, commit_every=5) as w:
            for f in make_episode(rng, 4):
                w.add_frame(*f)
            w.save_episode(Provenance("sim", "expert", 1))
            raise RuntimeError("generator crashed")
    assert EpisodeStore.load(root, SPEC).num_episodes == 1
    assert not (tmp_path / ".d.staging").exists()


# ---- bad input ---------------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"nope: dataset root does not exist"):
        EpisodeStore.load(tmp_path / "nope", SPEC)


def test_not_a_dataset(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match=r"x/meta/info.json: missing"):
        EpisodeStore.load(tmp_path / "x", SPEC)


def test_feature_mismatch_names_file_key_and_shape(written):
    root, _, _ = written
    with pytest.raises(DatasetError, match=r"info.json: feature 'observation.state' has shape \(8,\), expected \(9,\)"):
        EpisodeStore.load(root, FeatureSpec(state_dim=9))
    with pytest.raises(DatasetError, match=r"observation.images.main' has shape \(128, 128, 3\), expected \(64, 64, 3\)"):
        EpisodeStore.load(root, FeatureSpec(image_height=64, image_width=64))


def test_writer_refuses_to_append_mismatching_spec(written, tmp_path):
    root, _, _ = written
    with pytest.raises(DatasetError, match="feature 'action' has shape"):
        DatasetWriter(root, FeatureSpec(action_dim=6))


def test_empty_dataset(tmp_path):
    root = tmp_path / "empty"
    (root / "meta").mkdir(parents=True)
    info = {"fps": 10, "total_episodes": 0, "features": SPEC.lerobot_features()}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"empty: dataset has no episodes"):
        EpisodeStore.load(root, SPEC)


def _copy(root, tmp_path, name):
    import shutil

    dst = tmp_path / name
    shutil.copytree(root, dst)
    return dst


def test_truncated_parquet_names_the_file(written, tmp_path):
    root = _copy(written[0], tmp_path, "trunc_pq")
    pq = root / "data" / "chunk-000" / "file-000.parquet"
    pq.write_bytes(pq.read_bytes()[: pq.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000.parquet: unreadable parquet"):
        EpisodeStore.load(root, SPEC)


def test_truncated_video_names_the_file(written, tmp_path):
    root = _copy(written[0], tmp_path, "trunc_mp4")
    mp4 = next((root / "videos").rglob("*.mp4"))
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 3])
    with pytest.raises(DatasetError, match=r"file-000.mp4: cannot decode episode"):
        EpisodeStore.load(root, SPEC)


def test_bad_frames_are_refused_before_anything_is_written(tmp_path):
    w = DatasetWriter(tmp_path / "d", SPEC)
    img = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(ValueError, match=r"observation.state: expected shape \(8,\), got \(7,\)"):
        w.add_frame(img, np.zeros(7), np.zeros(7), "t")
    with pytest.raises(ValueError, match="action: non-finite"):
        w.add_frame(img, np.zeros(8), np.array([np.nan] * 7), "t")
    with pytest.raises(ValueError, match=r"images.main: expected uint8 \(128, 128, 3\)"):
        w.add_frame(np.zeros((64, 64, 3), np.uint8), np.zeros(8), np.zeros(7), "t")
    with pytest.raises(ValueError, match="no frames"):
        w.save_episode(Provenance("sim", "expert", 0))
    assert not (tmp_path / "d").exists()


def test_provenance_is_validated():
    with pytest.raises(ValueError, match="Provenance.domain='reel'"):
        Provenance("reel", "teleop")
