"""Animate task: speech (phoneme timings or the audio signal) and the row's emotion → per-frame ARKit weights and
head pose.

The attrs of `animation/` name where the motion came from: `tts` (espeak-ng's phoneme events), `aligned`
(a transcript or recognised words force-aligned to a recording) or `audio` (features of the signal)."""

from __future__ import annotations

import dataclasses

from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from tasks.animate.compose import animate_from_audio, animate_from_phonemes
from tasks.animate.config import AnimationConfig
from tasks.animate.emotion import parse_emotion
from tasks.common.arkit import ARKIT_NAMES
from tasks.common.rows import AvatarRow
from tasks.common.stage_task import run_stage


@task(name="animate", cache_policy=NO_CACHE, persist_result=False)
def animate_avatar(ingested: StageRef, row: AvatarRow, config: AnimationConfig):
    run = ingested.run
    settings = dataclasses.replace(config, fps=float(row.fps))

    def compute(store):
        # The manifest suite has checked the spec; a bad one here still fails only this row's stage.
        emotion = parse_emotion(row.emotion)
        audio = store.read(run, row.id, "input/audio")
        audio_attrs = store.array_attrs(run, row.id, "input/audio")
        sample_rate = int(audio_attrs["sample_rate"])
        phonemes = [(symbol, float(start), float(end)) for symbol, start, end in audio_attrs.get("phonemes", [])]
        if phonemes:
            # Stores written before `method` existed: phonemes came from TTS for text rows.
            source = audio_attrs.get("method") or ("tts" if audio_attrs.get("source") == "text" else "aligned")
            weights, head_pose = animate_from_phonemes(phonemes, audio.size / sample_rate, settings, row.seed,
                                                       audio=audio, sample_rate=sample_rate, emotion=emotion)
        else:
            weights, head_pose = animate_from_audio(audio, sample_rate, settings, row.seed, emotion=emotion)
            source = "audio"
        arrays = {
            "weights": store.write(run, row.id, "animation/weights", weights,
                                   attrs={"fps": row.fps, "names": list(ARKIT_NAMES), "source": source,
                                          "seed": row.seed, "emotion": str(emotion)}),
            "head_pose": store.write(run, row.id, "animation/head_pose", head_pose,
                                     attrs={"fps": row.fps, "columns": ["pitch", "yaw", "roll", "tx", "ty", "tz"]}),
        }
        store.avatar_group(run, row.id)["animation"].attrs.update({"source": source, "fps": row.fps})
        return arrays, {"frames": int(weights.shape[0]), "source": source}

    return run_stage("animate", ingested.store_url, run, row.id, compute)
