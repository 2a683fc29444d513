"""Great Expectations suites that gate the pipeline's boundaries.

`validate_manifest` runs the manifest suite on a pandas frame and turns every failed expectation
into a one-line error for each offending row, so a bad row is quarantined and the rest go on.
`validate_manifest_apart` runs it in a short-lived child process, for long-lived callers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$"
INTEGER_PATTERN = r"^[0-9]+$"
IDENTITY_PATTERN = r"^generate:[0-9]{1,10}$"
# A transcript must hold at least one letter or digit of any script.
TRANSCRIPT_PATTERN = r"[^\W_]"
BOOLEAN_WORDS = ["true", "false", "yes", "no", "1", "0"]
# great-expectations imports these at start-up for its KL-divergence expectation and its charts, which no
# suite here uses: about a quarter of the gate child's start-up. The child loads them only if they are read.
GATE_DEFERRED_IMPORTS = ("scipy.stats", "altair")
# great-expectations' optional SQL and cloud back ends, which it imports when installed (other packages here
# install them). The gate checks a pandas frame, so its child treats them as absent: about 0.5 s of its start-up.
GATE_HIDDEN_IMPORTS = ("sqlalchemy", "boto3", "botocore", "google.cloud", "google.auth", "google.oauth2",
                       "google.api_core")


@dataclass(frozen=True)
class ManifestLimits:
    """Bounds the manifest suite enforces."""

    min_fps: int = 1
    """Lowest frame rate a row may ask for."""
    max_fps: int = 60
    """Highest frame rate a row may ask for."""
    min_resolution: int = 64
    """Smallest square output size in pixels."""
    max_resolution: int = 2048
    """Largest square output size in pixels."""


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def manifest_suite(limits: ManifestLimits):
    """The manifest expectation suite, with a user-facing message for each expectation."""
    import great_expectations as gx

    e = gx.expectations
    checks = [
        (e.ExpectColumnValuesToNotBeNull(column="id"), "id is empty"),
        (e.ExpectColumnValuesToMatchRegex(column="id", regex=ID_PATTERN),
         "id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"),
        # A driving video may stand in for both: its best frame is the portrait, its sound the speech.
        (e.ExpectColumnValuesToBeInSet(column="face_source", value_set=["portrait", "identity", "video"]),
         "give exactly one of 'portrait' or 'identity'"),
        (e.ExpectColumnValuesToMatchRegex(column="identity", regex=IDENTITY_PATTERN),
         "identity must be generate:<seed> with a whole-number seed, e.g. generate:42"),
        (e.ExpectColumnValuesToBeInSet(column="refine_word", value_set=BOOLEAN_WORDS),
         "refine must be true or false"),
        (e.ExpectColumnValuesToBeInSet(column="speech_source", value_set=["text", "audio", "video"]),
         "give exactly one of 'text' or 'audio'"),
        (e.ExpectColumnValuesToBeInSet(column="transcript_use", value_set=["none", "audio"]),
         "a 'transcript' goes only with 'audio' (it says what the recording says)"),
        (e.ExpectColumnValuesToMatchRegex(column="transcript", regex=TRANSCRIPT_PATTERN),
         "transcript has no words (it needs at least one letter or digit)"),
        (e.ExpectColumnValuesToBeNull(column="emotion_error"),
         lambda row: f"emotion: {row['emotion_error']}"),
        (e.ExpectColumnValuesToMatchRegex(column="language", regex=LANGUAGE_PATTERN),
         "language must be an espeak-ng code such as en, en-us or fr"),
        (e.ExpectColumnValuesToMatchRegex(column="fps", regex=INTEGER_PATTERN), "fps must be a whole number"),
        (e.ExpectColumnValuesToBeBetween(column="fps_value", min_value=limits.min_fps, max_value=limits.max_fps),
         f"fps must be between {limits.min_fps} and {limits.max_fps}"),
        (e.ExpectColumnValuesToMatchRegex(column="resolution", regex=INTEGER_PATTERN),
         "resolution must be a whole number"),
        (e.ExpectColumnValuesToBeBetween(column="resolution_value", min_value=limits.min_resolution,
                                         max_value=limits.max_resolution),
         f"resolution must be between {limits.min_resolution} and {limits.max_resolution}"),
        (e.ExpectColumnValuesToBeInSet(column="resolution_parity", value_set=[0]),
         "resolution must be even (H.264 needs even frame sizes)"),
        (e.ExpectColumnValuesToBeUnique(column="id"), "duplicate id"),
    ]
    return _suite("avatarflow-manifest", checks)


def _suite(name: str, checks: list) -> tuple:
    """A suite of (expectation, message) pairs, and the messages keyed by (type, column)."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name)
    messages = {}
    for expectation, message in checks:
        suite.add_expectation(expectation)
        messages[(expectation.expectation_type, expectation.column)] = message
    return suite, messages


def _with_derived_columns(frame: pd.DataFrame) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    frame = frame.copy()
    has_text = frame["text"].notna()
    has_audio = frame["audio"].notna()
    has_portrait = frame["portrait"].notna()
    has_identity = frame["identity"].notna()
    has_video = frame["video"].notna() if "video" in frame else pd.Series(False, index=frame.index)
    frame["face_source"] = np.where(has_portrait & ~has_identity, "portrait",
                                    np.where(has_identity & ~has_portrait, "identity",
                                             np.where(has_video & ~has_portrait & ~has_identity, "video", "both-or-none")))
    frame["refine_word"] = frame["refine"].map(lambda v: None if v is None else str(v).strip().lower())
    frame["speech_source"] = np.where(has_text & ~has_audio, "text", np.where(
        has_audio & ~has_text, "audio", np.where(has_video & ~has_text & ~has_audio, "video", "both-or-none")))
    has_transcript = frame["transcript"].notna()
    # A recording to transcribe: the audio file, or the driving video's own sound.
    recorded = has_audio | (has_video & ~has_text)
    frame["transcript_use"] = np.where(~has_transcript, "none", np.where(recorded, "audio", "without-audio"))
    for column in ("fps", "resolution"):
        # A number too long for int64 would become NaN and pass the range check: it is simply too large.
        values = frame[column].map(lambda v: "inf" if isinstance(v, str) and v.isascii() and v.isdigit()
                                   and len(v) > 15 else v)
        frame[f"{column}_value"] = pd.to_numeric(values, errors="coerce")
    frame["resolution_parity"] = frame["resolution_value"] % 2
    # The emotion parser's own one-line error per row (None when valid), so the message names the problem.
    from tasks.animate.emotion import emotion_spec_error

    frame["emotion_error"] = frame["emotion"].map(lambda v: None if v is None else emotion_spec_error(v))
    return frame


def validate_manifest(frame: pd.DataFrame, limits: ManifestLimits = ManifestLimits()) -> dict[int, str]:
    """Return {row index: error message} for every row that fails the manifest suite."""
    context = _context()
    source = context.data_sources.add_pandas("manifest")
    batch_definition = source.add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    suite, messages = manifest_suite(limits)
    derived = _with_derived_columns(frame)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": derived})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})

    errors: dict[int, list[str]] = {}
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        message = messages[(config.type, config.kwargs.get("column"))]
        for index in outcome.result.get("unexpected_index_list") or []:
            index = int(index)
            if message == "duplicate id":
                row_id = derived.at[index, "id"]
                first = int(derived.index[derived["id"] == row_id][0])
                if index == first:
                    continue  # the first occurrence runs; later ones are quarantined
                message_for_row = f"duplicate id '{row_id}' (already used by an earlier row)"
            elif callable(message):  # a message built from the row's own derived columns
                message_for_row = message(derived.loc[index])
            else:
                message_for_row = message
            errors.setdefault(index, []).append(message_for_row)
    return {index: "; ".join(found) for index, found in sorted(errors.items())}


class _GateChild:
    """A child Python that imports great-expectations at once, then reads a pickled (frame, limits) on its
    stdin and prints the errors as JSON on its last line. `send` hands it the request on a thread, so a
    caller can send it early and take the answer later."""

    def __init__(self) -> None:
        import subprocess
        import sys
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])  # where `stores` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([sys.executable, "-m", "stores.expectations"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.request: tuple | None = None
        self._exchange = None
        self._reply: tuple[bytes, bytes] = (b"", b"")

    def send(self, frame: pd.DataFrame, limits: ManifestLimits) -> None:
        import pickle
        import threading

        self.request = (frame, limits)
        payload = pickle.dumps(self.request)
        self._exchange = threading.Thread(target=self._communicate, args=(payload,), daemon=True)
        self._exchange.start()

    def _communicate(self, payload: bytes) -> None:
        self._reply = self.process.communicate(payload)

    def answer(self) -> dict[int, str]:
        self._exchange.join()
        out, err = self._reply
        if self.process.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the manifest gate's child process exited with {self.process.returncode}: {tail[0]}")
        answer = out.decode("utf-8").strip().splitlines()[-1]  # the last line: anything printed before is not it
        return {int(index): message for index, message in json.loads(answer).items()}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# A gate child started ahead of its manifest (start_manifest_gate), maybe sent it (send_manifest_ahead).
_STARTED_GATE: list[_GateChild] = []


def start_manifest_gate() -> None:
    """Start the next validate_manifest_apart's child now: its seconds of imports then pass while the caller
    starts its run. A child never used is stopped when this process exits."""
    import atexit

    if not _STARTED_GATE:
        gate = _GateChild()
        _STARTED_GATE.append(gate)
        atexit.register(gate.stop)


def send_manifest_ahead(frame: pd.DataFrame, limits: ManifestLimits = ManifestLimits()) -> None:
    """Give the started gate its manifest now: it checks it as soon as its imports end, and
    validate_manifest_apart takes that answer if it is asked about an equal frame with equal limits."""
    if _STARTED_GATE and _STARTED_GATE[0].request is None:
        _STARTED_GATE[0].send(frame, limits)


def validate_manifest_apart(frame: pd.DataFrame, limits: ManifestLimits = ManifestLimits()) -> dict[int, str]:
    """validate_manifest in a child Python process that ends with it. great-expectations adds about 170 MB
    to a process once imported and run, and the flow process lives (holding the Dask scheduler) for the
    whole run: a long row's render would carry it to the end. A plain subprocess, not multiprocessing,
    so the caller's main module is never imported again. Uses the child start_manifest_gate started, if any,
    and its answer when send_manifest_ahead gave it an equal frame with equal limits."""
    gate = _STARTED_GATE.pop() if _STARTED_GATE else _GateChild()
    if gate.request is not None:
        sent_frame, sent_limits = gate.request
        if sent_limits == limits and sent_frame.equals(frame):
            return gate.answer()
        gate.stop()  # it was sent another manifest
        gate = _GateChild()
    gate.send(frame, limits)
    return gate.answer()


@dataclass(frozen=True)
class LabelRequirements:
    """What a synthetic data set's labels must show, as the synthesize flow asks for them."""

    resolution: int
    yaw: tuple[float, float]
    pitch: tuple[float, float]
    classes: tuple[str, ...]
    """Segmentation classes, background first; each must appear in some image."""
    coverage: float = 0.25
    """The extreme drawn angles must reach within this share of the range of its ends."""
    coverage_min_images: int = 16
    """Pose coverage is judged from this many images on: uniform draws all miss a quarter of the
    range with probability 0.75^n, 1% at 16 images, so a smaller set would fail by chance."""


def synthetic_label_suite(needs: LabelRequirements, n_images: int):
    """The label suite on the per-sample frame of `validate_synthetic_labels`, with a message each."""
    import great_expectations as gx

    e = gx.expectations
    checks = [
        (e.ExpectColumnValuesToBeBetween(column="visible_outside", min_value=0, max_value=0),
         "a visible landmark lies outside the image"),
        (e.ExpectColumnValuesToBeBetween(column="pixel_std", min_value=2.0),
         "an image is blank (grey-level spread under 2)"),
        (e.ExpectColumnValuesToBeBetween(column="hidden_on_surface_excess", max_value=0),
         "landmarks marked hidden lie on the rendered surface at their own depth (their visibility is wrong)"),
        (e.ExpectColumnValuesToBeBetween(column="enclosed_background", min_value=0, max_value=0),
         "background shows through the head (a hole between the face and the head, or under the chin)"),
        (e.ExpectColumnValuesToBeBetween(column="pixels_background", min_value=1),
         "an image has no background pixel (the face fills or overflows the frame)"),
    ]
    for name in needs.classes[1:]:
        checks.append((e.ExpectColumnMaxToBeBetween(column=f"pixels_{name}", min_value=1),
                       f"no image shows the segmentation class {name!r}"))
    for angle in ("yaw", "pitch") if n_images >= needs.coverage_min_images else ():
        low, high = getattr(needs, angle)
        reach = needs.coverage * (high - low)
        checks += [
            (e.ExpectColumnMinToBeBetween(column=f"{angle}_deg", max_value=low + reach),
             f"no image turns the head near the low end of the {angle} range ({low:g} deg)"),
            (e.ExpectColumnMaxToBeBetween(column=f"{angle}_deg", min_value=high - reach),
             f"no image turns the head near the high end of the {angle} range ({high:g} deg)"),
        ]
    return _suite("avatarflow-synthetic-labels", checks)


def validate_synthetic_labels(frame: pd.DataFrame, needs: LabelRequirements) -> list[str]:
    """Messages of the failed expectations on a per-sample frame (columns `visible_outside`,
    `pixel_std`, `hidden_on_surface_excess`, `enclosed_background`, `pixels_<class>`, `yaw_deg`,
    `pitch_deg`); empty when the labels pass."""
    context = _context()
    source = context.data_sources.add_pandas("synthetic")
    batch = (source.add_dataframe_asset("samples").add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": frame}))
    suite, messages = synthetic_label_suite(needs, len(frame))
    result = batch.validate(suite, result_format={"result_format": "SUMMARY"})
    failed = []
    for outcome in result.results:
        if not outcome.success:
            config = outcome.expectation_config
            count = outcome.result.get("unexpected_count")
            message = messages[(config.type, config.kwargs.get("column"))]
            failed.append(message if not count else f"{message} ({count} images)")
    return failed


if __name__ == "__main__":  # validate_manifest_apart's child: a pickled (frame, limits) in, JSON errors out
    import importlib
    import pickle
    import sys

    from infra.deferred_imports import defer_imports, hide_imports

    defer_imports(*GATE_DEFERRED_IMPORTS)
    hide_imports(*GATE_HIDDEN_IMPORTS)
    importlib.import_module("great_expectations")  # before the frame comes: a child started early imports it meanwhile

    _request = sys.stdin.buffer.read()
    if _request:  # nothing: the parent ended without a manifest to check
        _frame, _limits = pickle.loads(_request)
        print(json.dumps(validate_manifest(_frame, _limits)), flush=True)
