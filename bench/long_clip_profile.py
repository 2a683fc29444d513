"""Where a long speech row's time and memory go, stage by stage, outside the flow: each step runs in
a fresh Python process and reports its seconds and the peak RSS it added over its imports.

    python bench/long_clip_profile.py [--minutes 10] [--steps decode,align,recognise,visemes,audio]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("decode", "align", "recognise", "visemes", "audio", "tts")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_step(step: str, wav: Path, transcript: str) -> dict:
    """One step in this process; returns seconds, the peak RSS before and after (MiB) and a note."""
    from tasks.animate.compose import animate_from_audio, animate_from_phonemes
    from tasks.animate.config import AnimationConfig
    from tasks.ingest.alignment import time_speech
    from tasks.ingest.config import IngestConfig
    from tasks.ingest.media import load_audio
    from tasks.ingest.speech import spoken_phonemes, synthesize

    config = IngestConfig()
    rate = config.sample_rate
    pronounce = lambda word: spoken_phonemes(word, config.alignment.pronunciation_voice)  # noqa: E731
    audio = load_audio(wav, config) if step != "decode" else None
    phonemes = []
    if step == "visemes":
        phonemes = time_speech(audio, rate, transcript, "en", pronounce, config.alignment).phonemes
    before = _peak_mib()
    started = time.perf_counter()
    if step == "decode":
        audio = load_audio(wav, config)
        note = f"{audio.size / rate:.1f} s decoded"
    elif step in ("align", "recognise"):
        timing = time_speech(audio, rate, transcript if step == "align" else None, "en", pronounce, config.alignment)
        note = f"{timing.method}, {len(timing.phonemes)} phonemes, {len(timing.words)} words"
    elif step == "visemes":
        weights, _ = animate_from_phonemes(phonemes, audio.size / rate, AnimationConfig(), 0, audio=audio,
                                           sample_rate=rate)
        note = f"{weights.shape[0]} frames"
    elif step == "audio":
        weights, _ = animate_from_audio(audio, rate, AnimationConfig(), 0)
        note = f"{weights.shape[0]} frames"
    else:  # tts: about as many words as the clip's transcript
        speech = synthesize(transcript, "en", config)
        note = f"{speech.duration_seconds:.1f} s spoken"
    return {"step": step, "seconds": time.perf_counter() - started, "peak_before_mib": before,
            "peak_mib": _peak_mib(), "note": note}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--folder", type=Path, help="where the long clip is built (default: a temporary folder)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="avatarflow-long-"))
    if args.one:
        transcript = (folder / "long_speech.txt").read_text(encoding="utf-8")
        print(json.dumps(run_step(args.one, folder / "long_speech.wav", transcript)))
        return 0
    from bench.long_clip_input import build_long_speech

    wav, transcript = build_long_speech(folder, args.minutes)
    (folder / "long_speech.txt").write_text(transcript, encoding="utf-8")
    print(f"{args.minutes:g} min clip: {wav}")
    print(f"{'step':<10} {'seconds':>8} {'peak MiB':>9} {'added':>7}  note")
    for step in args.steps.split(","):
        done = subprocess.run([sys.executable, __file__, "--folder", str(folder), "--one", step],
                              capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            print(f"{step:<10} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{step:<10} {r['seconds']:8.1f} {r['peak_mib']:9.0f} {r['peak_mib'] - r['peak_before_mib']:7.0f}  "
              f"{r['note']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
