"""A row being rebuilt, or one that failed, keeps no output of an earlier build: its folder under
`outputs/<run>/` is removed when the row is planned for a rebuild."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from PIL import Image

from stores.outputs import RunOutputs


@pytest.mark.parametrize("where", ["local", "memory"])
def test_an_avatars_outputs_are_removed_and_hostile_ids_name_nothing(where, tmp_path):
    data_dir = str(tmp_path / "data") if where == "local" else f"memory://outputs-{uuid.uuid4().hex}"
    outputs = RunOutputs(data_dir, "r")
    outputs.avatar_file("a", "video").write_bytes(b"old video")
    outputs.avatar_file("a", "poster").write_bytes(b"old poster")
    outputs.avatar_file("b", "video").write_bytes(b"other")
    outputs.summary_json.write_text("{}")
    for hostile in ("", ".", "..", "../r", "a/..", "x\\..\\.."):
        assert not outputs.remove_avatar(hostile)
    assert outputs.remove_avatar("a")
    assert not outputs.avatar_file("a", "video").exists() and not outputs.avatar_file("a", "poster").exists()
    assert not outputs.remove_avatar("a")  # nothing left to remove
    assert outputs.avatar_file("b", "video").read_bytes() == b"other" and outputs.summary_json.exists()


def test_planning_a_rebuild_removes_the_rows_earlier_outputs(tmp_path):
    from avatarflow.presets import get_preset
    from stores.avatar_store import AvatarStore
    from tasks.batch.task import plan_run

    for name, value in (("a.png", 120), ("b.png", 130)):
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / name)
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,portrait,text\na,a.png,Hello.\nb,b.png,Hi.\n")
    data_dir = str(tmp_path / "data")

    def plan():
        return plan_run.fn(str(manifest), data_dir, "photo", get_preset("photo"))

    first = plan()
    outputs = RunOutputs(data_dir, first.run)
    for row in first.pending:  # as if both had been built
        outputs.avatar_file(row.id, "video").write_bytes(b"earlier build")
        AvatarStore(first.store_url).mark_complete(first.run, row.id, {"video": str(outputs.avatar_file(row.id, "video"))})
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "a.png")  # a's input changed: rebuild a
    second = plan()
    assert [row.id for row in second.pending] == ["a"] and [row.id for row in second.reused] == ["b"]
    assert not outputs.avatar_folder("a").exists() and not outputs.avatar_file("a", "video").exists()
    assert outputs.avatar_file("b", "video").read_bytes() == b"earlier build"


def test_avatar_folders_are_listed_once_and_removed_in_bulk(tmp_path):
    for data_dir in (str(tmp_path / "data"), f"memory://outputs-{uuid.uuid4().hex}"):
        outputs = RunOutputs(data_dir, "r")
        assert outputs.avatar_folders() == set() and outputs.remove_avatars(["a"]) == []
        for avatar in ("a", "b", "c"):
            outputs.avatar_file(avatar, "video").write_bytes(b"v")
        outputs.summary_json.write_text("{}")
        assert outputs.avatar_folders() == {"a", "b", "c"}
        assert outputs.remove_avatars(["a", "x", "c", "a", "../r"]) == ["a", "c"]
        assert outputs.avatar_folders() == {"b"} and outputs.summary_json.exists()


def test_a_row_that_fails_on_rebuild_loses_its_earlier_outputs_when_the_run_is_reported(tmp_path):
    """The reports drop the folder of every row that failed this time, also one quarantined while
    planning (its input file is gone), and keep those of finished rows."""
    from avatarflow.presets import get_preset
    from stores.avatar_store import AvatarStore
    from tasks.batch.task import plan_run, write_interrupted_run

    for name, value in (("a.png", 120), ("b.png", 130)):
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / name)
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,portrait,text\na,a.png,Hello.\nb,b.png,Hi.\n")
    data_dir = str(tmp_path / "data")
    first = plan_run.fn(str(manifest), data_dir, "photo", get_preset("photo"))
    outputs = RunOutputs(data_dir, first.run)
    for row in first.pending:
        outputs.avatar_file(row.id, "video").write_bytes(b"earlier build")
        AvatarStore(first.store_url).mark_complete(first.run, row.id, {"video": str(outputs.avatar_file(row.id, "video"))})
    (tmp_path / "a.png").unlink()
    second = plan_run.fn(str(manifest), data_dir, "photo", get_preset("photo"))
    assert [failure["id"] for failure in second.quarantined] == ["a"] and [row.id for row in second.reused] == ["b"]
    summary = write_interrupted_run(second, [], [], "photo")
    assert [failure["id"] for failure in summary["failed"]] == ["a"]
    assert not outputs.avatar_folder("a").exists()
    assert outputs.avatar_file("b", "video").read_bytes() == b"earlier build"
