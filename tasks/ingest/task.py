"""Ingest task: decode the portrait, and load the speech or speak the text, into `input/*`.

Recorded English speech gets phoneme timings by forced alignment of its transcript (or of the words
recognised in it); `input/audio`'s attrs say which method drives the visemes: `tts`, `aligned` or `audio`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.capture.video import load_video_sound
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.retries import IO_RETRIES, RETRY_DELAY_SECONDS, retry_unless_bad_input
from tasks.common.stage_task import run_stage
from tasks.ingest.alignment import AlignmentError, time_speech
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import audio_warnings, load_audio, load_image, resolve_input_path
from tasks.ingest.speech import spoken_phonemes, synthesize, validate_language


@task(name="ingest", retries=IO_RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, persist_result=False)
def ingest_avatar(store_url: str, run: str, row: AvatarRow, manifest_dir: str, config: IngestConfig):
    def compute(store):
        arrays = {}
        if row.portrait is not None:  # generated identities have no photo
            portrait_path = resolve_input_path(row.portrait, manifest_dir, config)
            image = load_image(portrait_path, config)
            arrays["portrait"] = store.write(run, row.id, "input/portrait", image, attrs={"file": portrait_path.name})
        validate_language(row.language)
        if row.text is not None:
            speech = synthesize(row.text, row.voice or row.language, config)
            audio, phonemes, warnings, source = speech.audio, speech.phonemes, list(speech.warnings), "text"
            method, words = "tts", []
        elif row.audio is None and row.transcript is None:  # a driving video's own sound; capture drives the mouth
            audio, warnings = load_video_sound(resolve_input_path(row.video, manifest_dir, config),
                                               config.sample_rate, config.max_audio_seconds)
            phonemes, method, words, source = [], "capture", [], "video"
        else:
            if row.audio is not None:
                audio, sound_notes, source = load_audio(resolve_input_path(row.audio, manifest_dir, config), config), [], "audio"
            else:  # a transcribed driving video: its words are aligned and recorded
                audio, sound_notes = load_video_sound(resolve_input_path(row.video, manifest_dir, config),
                                                      config.sample_rate, config.max_audio_seconds)
                source = "video"
            settings = config.alignment
            try:
                timing = time_speech(audio, config.sample_rate, row.transcript, row.language,
                                     lambda word: spoken_phonemes(word, settings.pronunciation_voice), settings)
            except AlignmentError as error:
                raise AvatarInputError(f"transcript does not fit the audio: {error}") from None
            phonemes, method, words = timing.phonemes, timing.method, timing.words
            warnings = sound_notes + audio_warnings(audio, config) + timing.warnings
        arrays["audio"] = store.write(
            run, row.id, "input/audio", audio,
            chunks=(config.sample_rate * 30,),
            attrs={"sample_rate": config.sample_rate, "source": source, "method": method, "words": words,
                   "phonemes": [[symbol, round(start, 4), round(end, 4)] for symbol, start, end in phonemes]},
        )
        duration = audio.size / config.sample_rate
        return arrays, {"warnings": warnings, "duration_s": duration, "source": source, "method": method}

    return run_stage("ingest", store_url, run, row.id, compute)
