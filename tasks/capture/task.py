"""Capture tasks: track a driving video's face (`track`), then solve it on the row's rig (`capture`).

`track` writes `capture/landmarks` (T×478×3), `capture/valid` (T), `capture/times` and
`capture/portrait_score`, and, for a row with neither portrait nor identity, `input/portrait`: the
video's best frame. `capture` writes `animation/weights` and `animation/head_pose` as the animate
stage does, with the source `capture`, at the row's fps and as long as `input/audio`."""

from __future__ import annotations

import dataclasses

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from tasks.animate.audio_features import analyse
from tasks.animate.compose import frame_count, phoneme_mouth
from tasks.animate.config import AnimationConfig
from tasks.animate.emotion import apply_emotion
from tasks.capture.config import CaptureConfig
from tasks.capture.solve import bridge, solve_capture, with_speech_mouth
from tasks.capture.tracking import portrait_scores, track_frames, usable_frames
from tasks.capture.video import check_video_file, iter_frames, read_frame
from tasks.common.arkit import ARKIT_NAMES
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.stage_task import run_stage
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import decodable_file, resolve_input_path
from tasks.reconstruct.canonical_shape import load_canonical_shape
from tasks.reconstruct.topology import N_LANDMARKS


@task(name="track", cache_policy=NO_CACHE, persist_result=False)
def track_video(ingested: StageRef, row: AvatarRow, manifest_dir: str, config: CaptureConfig,
                ingest: IngestConfig):
    run = ingested.run

    def compute(store):
        source = resolve_input_path(row.video, manifest_dir, ingest)
        check_video_file(source, config)
        limit = ingest.max_audio_seconds
        with decodable_file(source) as local:
            tracked = track_frames(iter_frames(local, source.name, config, limit, config.track_max_side), config)
            share = float(tracked.found.mean())
            if share < config.min_face_fraction:
                raise AvatarInputError(f"{source.name}: a face was found in {share:.0%} of the video's frames "
                                       f"(at least {config.min_face_fraction:.0%} are needed)")
            valid = usable_frames(tracked.found, tracked.sharpness, config.blur_ratio)
            scores = portrait_scores(tracked.landmarks, valid, tracked.sharpness, load_canonical_shape())
            best = int(np.argmax(scores))
            portrait = None
            if row.portrait is None and row.identity is None:  # the video's own best frame is the portrait
                portrait = read_frame(local, source.name, best, config, limit)
        write = lambda name, array, **kw: store.write(run, row.id, name, array, **kw)  # noqa: E731
        landmarks = bridge(tracked.landmarks, valid, tracked.times).astype(np.float32)
        frames = len(tracked.times)
        arrays = {
            "landmarks": write("capture/landmarks", landmarks, chunks=(min(frames, 256), N_LANDMARKS, 3),
                               attrs={"units": "video pixels (x, y, z on the x scale)", "file": source.name,
                                      "size": list(tracked.size),
                                      "bridged": "frames whose capture/valid is false are interpolated"}),
            "valid": write("capture/valid", valid, attrs={"face_found": int(tracked.found.sum()),
                                                          "blurred": int((tracked.found & ~valid).sum())}),
            "times": write("capture/times", tracked.times, attrs={"units": "seconds from the first frame"}),
            "portrait_score": write("capture/portrait_score", scores.astype(np.float32),
                                    attrs={"best_frame": best, "score": float(scores[best]),
                                           "terms": "frontal × eyes open × mouth closed × sharp"}),
        }
        warnings = []
        if not valid.all():
            warnings.append(f"{int((~valid).sum())} of {frames} video frames had no usable face "
                            "(none found or blurred); they are bridged by interpolation")
        if portrait is not None:
            arrays["portrait"] = write("input/portrait", portrait, attrs={
                "file": source.name, "source": "video", "frame": best,
                "time_s": float(tracked.times[best]), "score": float(scores[best])})
        duration = float(tracked.times[-1] + np.median(np.diff(tracked.times))) if frames > 1 else 0.0
        return arrays, {"warnings": warnings, "frames": frames, "valid_frames": int(valid.sum()),
                        "video_fps": frames / duration if duration > 0 else None,
                        "record": {"video_frames": frames, "portrait_frame": best if portrait is not None else None}}

    return run_stage("track", ingested.store_url, run, row.id, compute)


@task(name="capture", cache_policy=NO_CACHE, persist_result=False)
def capture_motion(rig: StageRef, tracked: StageRef, row: AvatarRow, config: CaptureConfig,
                   animate: AnimationConfig):
    """`rig` is the stage that wrote the rig (reconstruct or style); `tracked` the track stage."""
    run = rig.run

    def compute(store):
        read = lambda name: store.read(run, row.id, name)  # noqa: E731
        audio_attrs = store.array_attrs(run, row.id, "input/audio")
        seconds = store.avatar_group(run, row.id)["input/audio"].shape[0] / int(audio_attrs["sample_rate"])
        n_frames = frame_count(seconds, row.fps)
        times = read("capture/times")
        portrait = store.array_attrs(run, row.id, "input/portrait") if row.identity is None else {}
        # A rig built from one of the video's frames is at rest in that frame's head pose.
        reference = int(portrait["frame"]) if portrait.get("source") == "video" else None
        motion = solve_capture(read("capture/landmarks"), read("capture/valid"), times,
                               read("mesh/vertices")[:N_LANDMARKS], read("blendshapes/deltas")[:, :N_LANDMARKS],
                               n_frames, row.fps, config, reference_frame=reference)
        weights, mouth = motion.weights, "capture"
        if audio_attrs.get("source") == "text":  # a spoken script owns the mouth; the video the rest
            phonemes = [(s, float(a), float(b)) for s, a, b in audio_attrs.get("phonemes", [])]
            settings = dataclasses.replace(animate, fps=float(row.fps))
            features = analyse(read("input/audio"), int(audio_attrs["sample_rate"]), settings)
            speech = phoneme_mouth(phonemes, n_frames, settings, features)
            weights, mouth = with_speech_mouth(weights, speech, ARKIT_NAMES), "tts"
        # The row's emotion is layered over the performance under the same ownership rules as speech.
        weights, head_pose = apply_emotion(weights, motion.head_pose, row.emotion, float(row.fps), animate.emotion)
        arrays = {
            "weights": store.write(run, row.id, "animation/weights", weights,
                                   attrs={"fps": row.fps, "names": list(ARKIT_NAMES), "source": "capture",
                                          "mouth": mouth, "seed": row.seed, "emotion": row.emotion or "neutral"}),
            "head_pose": store.write(run, row.id, "animation/head_pose", head_pose,
                                     attrs={"fps": row.fps, "columns": ["pitch", "yaw", "roll", "tx", "ty", "tz"]}),
            "rest": store.write(run, row.id, "capture/rest_offset", motion.rest_offset.astype(np.float32),
                                attrs={"names": list(ARKIT_NAMES), "percentile": config.rest_percentile}),
            "fit_error": store.write(run, row.id, "capture/fit_error", motion.fit_error,
                                     attrs={"units": "RMS landmark residual, inter-ocular distances"}),
        }
        store.avatar_group(run, row.id)["animation"].attrs.update({"source": "capture", "fps": row.fps,
                                                                   "mouth": mouth})
        warnings = []
        video_seconds = float(times[-1]) + (float(np.median(np.diff(times))) if len(times) > 1 else 0.0)
        if seconds > video_seconds + 0.5:
            warnings.append(f"the sound lasts {seconds:.1f} s, the driving video {video_seconds:.1f} s; "
                            "its last frame is held")
        return arrays, {"warnings": warnings, "frames": n_frames, "source": "capture", "mouth": mouth,
                        "fit_error": float(np.nanmedian(motion.fit_error))}

    return run_stage("capture", rig.store_url, run, row.id, compute)
