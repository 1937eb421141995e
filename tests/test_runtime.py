"""runtime.atomic_path: readers see the old file or the whole new one, never a part, and no temp is left behind."""

import json

import pytest

from cotrain.runtime import atomic_path, write_json_atomic


def test_atomic_path_replaces_only_when_the_block_ends(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json_atomic(path, {"a": 1})
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".json" and tmp != path
        tmp.write_text('{"a": 2')  # half-written: not visible yet
        assert json.loads(path.read_text()) == {"a": 1}
        tmp.write_text('{"a": 2}')
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_atomic_path_keeps_the_old_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step\n1\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("step\n1\n2")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "step\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
