"""A long speech input for benchmarks: the shared English speech clips laid end to end, with short
pauses, as one 16 kHz mono WAV, and the words pocketsphinx recognises in each clip as its
transcript. Built at benchmark time, never committed.

    python bench/long_clip_input.py OUT_FOLDER [--minutes 10]
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLES = REPO.parent / "shared" / "samples"
CLIPS = ("audio/en_st_RD_Radio31_000.wav", "audio/en_em_echomimic_en.wav")
PAUSE_S = 0.4
RATE = 16000


def build_long_speech(folder: Path, minutes: float, samples: Path = SAMPLES) -> tuple[Path, str]:
    """Write `long_speech.wav` (at least `minutes` long) into folder; return it and its transcript.
    The WAV is written clip by clip, so the whole clip is never held in memory here."""
    from tasks.ingest.alignment import recognise
    from tasks.ingest.config import IngestConfig
    from tasks.ingest.media import load_audio

    config = IngestConfig(sample_rate=RATE)
    clips = [load_audio(samples / name, config) for name in CLIPS]
    words = [recognise(clip, RATE) for clip in clips]
    pause = np.zeros(int(PAUSE_S * RATE), np.int16)
    pcm = [np.round(np.clip(clip, -1, 1) * 32767).astype("<i2") for clip in clips]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "long_speech.wav"
    target = int(minutes * 60 * RATE)
    written, spoken, index = 0, [], 0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        while written < target:
            clip = pcm[index % len(pcm)]
            out.writeframes(clip.tobytes() + pause.tobytes())
            spoken.extend(words[index % len(words)])
            written += clip.size + pause.size
            index += 1
    return path, " ".join(spoken)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    path, transcript = build_long_speech(args.folder, args.minutes)
    (args.folder / "long_speech.txt").write_text(transcript, encoding="utf-8")
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB), transcript of {len(transcript.split())} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
