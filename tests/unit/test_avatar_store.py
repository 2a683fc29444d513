"""The Zarr avatar store: refs, attrs, the complete flag and the remote/in-memory variants."""

import numpy as np

from stores.avatar_store import AvatarStore


def test_write_read_round_trip_and_ref(tmp_path):
    store = AvatarStore(str(tmp_path / "avatars.zarr"))
    store.prepare_avatar("run1", "alice", {"id": "alice"})
    vertices = np.arange(12, dtype=np.float32).reshape(4, 3)
    ref = store.write("run1", "alice", "mesh/vertices", vertices)
    assert ref.group == "runs/run1/alice" and ref.shape == (4, 3) and ref.dtype == "float32"
    again = AvatarStore(str(tmp_path / "avatars.zarr"))  # a second process would open it like this
    np.testing.assert_array_equal(again.read("run1", "alice", "mesh/vertices"), vertices)


def test_complete_flag_is_separate_per_avatar_and_run():
    store = AvatarStore("memory://store-test")
    store.prepare_avatar("r", "a", {"id": "a"})
    store.prepare_avatar("r", "b", {"id": "b"})
    store.record_stage("r", "a", "ingest", "ok", 0.5)
    assert not store.is_complete("r", "a")
    store.record_stage("r", "a", "animate", "ok", 0.25)
    assert set(store.stage_records("r", "a")) == {"ingest", "animate"}
    store.mark_complete("r", "a", {"video": "talk.mp4"})
    assert store.is_complete("r", "a") and not store.is_complete("r", "b") and not store.is_complete("other", "a")
    attrs = store.attrs("r", "a")
    assert attrs["stages"]["ingest"]["status"] == "ok" and attrs["outputs"] == {"video": "talk.mp4"}
    store.record_stage("r", "b", "ingest", "failed", 0.1, error="x.jpg: empty file")
    store.mark_failed("r", "b", "ingest", "x.jpg: empty file")
    failed = store.attrs("r", "b")
    assert failed["complete"] is False and failed["error"] == {"stage": "ingest", "message": "x.jpg: empty file"}
    assert failed["stages"]["ingest"]["status"] == "failed"
    assert attrs["manifest_row"] == {"id": "a"}


def test_frames_are_chunked_one_per_frame(tmp_path):
    store = AvatarStore(str(tmp_path / "s.zarr"))
    frames = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    store.write("r", "a", "render/frames", frames, chunks=(1, 8, 8, 3))
    import zarr

    array = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["runs/r/a/render/frames"]
    assert array.chunks == (1, 8, 8, 3)


def test_fsspec_url_variant(tmp_path):
    url = f"file://{tmp_path / 'f.zarr'}"
    store = AvatarStore(url)
    store.write("r", "a", "animation/weights", np.ones((2, 52), np.float32), attrs={"fps": 25})
    assert store.array_attrs("r", "a", "animation/weights") == {"fps": 25}


def _open_and_prepare(path: str, run: str, start, errors) -> None:
    start.wait()
    try:
        AvatarStore(path).prepare_avatar(run, f"{run}0", {"id": f"{run}0"})
    except Exception as error:  # reported to the test through the queue
        errors.put(f"{type(error).__name__}: {error}")


def test_runs_opening_a_fresh_store_at_the_same_moment_all_go_on(tmp_path):
    """Two runs started together on a fresh data dir both create the store's root group; the one that
    loses the race opens the other's (it raised ContainsGroupError in about 4 tries of 5)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(6):
        path = str(tmp_path / f"try{attempt}" / "avatars.zarr")
        start, errors = context.Barrier(3), context.Queue()
        runs = [context.Process(target=_open_and_prepare, args=(path, run, start, errors)) for run in ("a", "b", "c")]
        for process in runs:
            process.start()
        for process in runs:
            process.join(timeout=60)
        assert all(process.exitcode == 0 for process in runs)
        assert errors.empty(), errors.get()
        store = AvatarStore(path)
        assert all(store.avatar_group(run, f"{run}0").attrs["manifest_row"] == {"id": f"{run}0"} for run in "abc")
