"""Manifest reading and the great-expectations manifest suite."""

from pathlib import Path

import pytest

from stores.expectations import validate_manifest
from stores.manifest import ManifestError, read_manifest
from tasks.batch.plan import row_fingerprint, run_name, split_rows
from tasks.common.rows import AvatarRow


def write(tmp_path: Path, text: str | bytes, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_unknown_column_rejects_the_manifest(tmp_path):
    path = write(tmp_path, "id,portrait,text,mood\na,p.jpg,hi,happy\n")
    with pytest.raises(ManifestError, match="unknown column.*'mood'"):
        read_manifest(path)


def test_missing_required_column(tmp_path):
    with pytest.raises(ManifestError, match="needs a 'portrait' column"):
        read_manifest(write(tmp_path, "id,text\na,hi\n"))


def test_non_utf8_field_is_a_row_error_not_a_file_error(tmp_path):
    path = write(tmp_path, b"id,portrait,text\na,p.jpg,hello\nb,p.jpg,caf\xe9\n")
    table = read_manifest(path)
    assert [r["id"] for r in table.rows] == ["a", "b"]
    assert table.row_errors == {1: "column 'text' is not valid UTF-8"}
    assert table.line_numbers == [2, 3]


def test_parquet_manifest(tmp_path):
    import pandas as pd

    path = tmp_path / "m.parquet"
    pd.DataFrame({"id": ["a"], "portrait": ["p.jpg"], "audio": ["x.wav"]}).to_parquet(path)
    table = read_manifest(path)
    assert table.rows[0]["audio"] == "x.wav" and table.rows[0]["text"] is None


def test_suite_flags_each_bad_row_with_all_its_reasons(tmp_path):
    path = write(tmp_path, "\n".join([
        "id,portrait,text,audio,language,fps,resolution",
        "ok,p.jpg,hello,,en,25,512",
        "dup,p.jpg,hello,,,,",
        "dup,p.jpg,hello,,,,",
        "bad id!,p.jpg,hi,,,,",
        "both,p.jpg,hi,x.wav,,,",
        "neither,p.jpg,,,,,",
        "limits,p.jpg,hi,,e n,99,513",
        "nofps,p.jpg,hi,,,fast,",
    ]) + "\n")
    errors = validate_manifest(read_manifest(path).to_frame())
    assert 0 not in errors and 1 not in errors  # the first 'dup' runs
    assert errors[2].startswith("duplicate id 'dup'")
    assert "1-64 characters" in errors[3]
    assert errors[4] == errors[5] == "give exactly one of 'text' or 'audio'"
    assert set(errors[6].split("; ")) == {
        "language must be an espeak-ng code such as en, en-us or fr",
        "fps must be between 1 and 60",
        "resolution must be even (H.264 needs even frame sizes)",
    }
    assert errors[7] == "fps must be a whole number"


APART_CHECK = """
import json, sys
sys.path.insert(0, sys.argv[2])
from stores.expectations import validate_manifest_apart
from stores.manifest import read_manifest
errors = validate_manifest_apart(read_manifest(sys.argv[1]).to_frame())
print(json.dumps({"errors": errors, "gx_here": "great_expectations" in sys.modules}))
"""


def test_the_suite_run_apart_gives_the_same_errors_and_leaves_no_great_expectations_behind(tmp_path):
    import json
    import subprocess
    import sys

    path = write(tmp_path, "id,portrait,text,audio,fps\nok,p.jpg,hello,,25\nbad id!,p.jpg,hi,,\nboth,p.jpg,hi,x.wav,99\n")
    completed = subprocess.run([sys.executable, "-c", APART_CHECK, str(path), str(Path(__file__).resolve().parents[2])],
                               capture_output=True, text=True, check=True, timeout=300)
    apart = json.loads(completed.stdout.strip().splitlines()[-1])
    assert apart["gx_here"] is False
    here = validate_manifest(read_manifest(path).to_frame())
    assert {int(index): message for index, message in apart["errors"].items()} == here and set(here) == {1, 2}


def test_a_gate_started_ahead_is_the_one_that_checks_the_manifest(tmp_path):
    from stores import expectations
    from stores.expectations import validate_manifest_apart

    path = write(tmp_path, "id,portrait,text,audio,fps\nok,p.jpg,hello,,25\nbad id!,p.jpg,hi,,\n")
    expectations.start_manifest_gate()
    child = expectations._STARTED_GATE[0].process
    errors = validate_manifest_apart(read_manifest(path).to_frame())
    assert set(errors) == {1} and "id must be" in errors[1]
    assert child.returncode == 0 and not expectations._STARTED_GATE  # used, and finished
    assert validate_manifest_apart(read_manifest(path).to_frame()) == errors  # the next call starts its own


def test_a_manifest_sent_ahead_is_checked_by_the_started_gate_and_its_answer_used(tmp_path, monkeypatch):
    from stores import expectations
    from stores.expectations import ManifestLimits, send_manifest_ahead, validate_manifest_apart

    frame = read_manifest(write(tmp_path, "id,portrait,text,audio,fps\nok,p.jpg,hello,,25\nbad id!,p.jpg,hi,,\n")).to_frame()
    expectations.start_manifest_gate()
    gate = expectations._STARTED_GATE[0]
    send_manifest_ahead(frame.copy(), ManifestLimits())

    def no_new_child():
        raise AssertionError("a new gate child was started for the manifest sent ahead")

    monkeypatch.setattr(expectations, "_GateChild", no_new_child)
    errors = validate_manifest_apart(frame, ManifestLimits())
    assert set(errors) == {1} and "id must be" in errors[1]
    assert gate.process.returncode == 0 and not expectations._STARTED_GATE


def test_a_gate_sent_another_manifest_or_other_limits_is_not_believed(tmp_path):
    from stores import expectations
    from stores.expectations import ManifestLimits, send_manifest_ahead, validate_manifest_apart

    sent = read_manifest(write(tmp_path, "id,portrait,text,audio,fps\nok,p.jpg,hello,,25\n", "sent.csv")).to_frame()
    asked = read_manifest(write(tmp_path, "id,portrait,text,audio,fps\nok,p.jpg,hello,,25\nbad id!,p.jpg,hi,,\n",
                                "asked.csv")).to_frame()
    expectations.start_manifest_gate()
    send_manifest_ahead(sent)
    assert set(validate_manifest_apart(asked)) == {1}  # the gate's answer about `sent` (no error) is not used

    expectations.start_manifest_gate()
    send_manifest_ahead(sent)
    strict = validate_manifest_apart(sent, ManifestLimits(max_fps=24))
    assert set(strict) == {0} and "fps" in strict[0]  # other limits: checked again with them


UNUSED_GATE = """
import sys
sys.path.insert(0, sys.argv[1])
from stores import expectations
expectations.start_manifest_gate()
print(expectations._STARTED_GATE[0].process.pid, flush=True)
"""


def test_a_gate_started_but_never_used_ends_with_its_process():
    import os
    import subprocess
    import sys
    import time

    completed = subprocess.run([sys.executable, "-c", UNUSED_GATE, str(Path(__file__).resolve().parents[2])],
                               capture_output=True, text=True, check=True, timeout=300)
    pid = int(completed.stdout.strip().splitlines()[-1])
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as stat:  # a zombie that its init has not reaped yet is gone too
            if stat.read().split(") ", 1)[1].startswith("Z"):
                break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the unused gate's child {pid} still runs")
    assert completed.stderr.strip() == ""


def test_suite_prints_no_warning_on_a_valid_manifest(tmp_path):
    """Its regexes have no capture groups: pandas warns on those, and the warning reached the terminal."""
    import warnings

    path = write(tmp_path, "id,portrait,text,language,fps,resolution\na,p.jpg,hello,en-us,25,512\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_manifest(read_manifest(path).to_frame()) == {}


def test_split_rows_applies_defaults_and_quarantines():
    rows = [{"id": "a", "portrait": "p", "text": "hi", "audio": None, "language": None, "voice": None,
             "fps": None, "resolution": "256"},
            {"id": "b", "portrait": "p", "text": None, "audio": None, "language": None, "voice": None,
             "fps": None, "resolution": None}]
    valid, quarantined = split_rows(rows, [2, 3], {1: "give exactly one of 'text' or 'audio'"}, "en")
    assert len(valid) == 1 and valid[0].fps == 25 and valid[0].resolution == 256 and valid[0].language == "en"
    assert quarantined == [{"line": 3, "id": "b", "stage": "manifest", "error": "give exactly one of 'text' or 'audio'"}]
    seeds = [AvatarRow(id=f"row{i}", line=i, portrait="p", text="t").seed for i in range(200)]
    assert len(set(seeds)) == 200 and all(0 <= s < 2**31 for s in seeds)
    assert valid[0].seed == AvatarRow(id="a", line=99, portrait="x", text="y").seed


def test_run_name_depends_on_the_manifest_file_and_preset(tmp_path):
    manifest = tmp_path / "my manifest.csv"
    a = run_name(manifest, "photo")
    assert a == run_name(manifest, "photo") and a.startswith("my-manifest-")
    assert a != run_name(manifest, "lit") and a != run_name(tmp_path / "other.csv", "photo")


def test_fingerprint_follows_row_settings_and_input_files(tmp_path):
    portrait = tmp_path / "p.jpg"
    portrait.write_bytes(b"one")
    row = AvatarRow(id="a", line=2, portrait="p.jpg", text="hi")
    base = row_fingerprint(row, tmp_path, "{}")
    assert base == row_fingerprint(AvatarRow(id="a", line=9, portrait="p.jpg", text="hi"), tmp_path, "{}")
    assert base != row_fingerprint(AvatarRow(id="a", line=2, portrait="p.jpg", text="hello"), tmp_path, "{}")
    assert base != row_fingerprint(row, tmp_path, '{"fps": 30}')
    portrait.write_bytes(b"a new photo")
    assert base != row_fingerprint(row, tmp_path, "{}")


def test_parquet_numbers_with_gaps_stay_whole(tmp_path):
    import pandas as pd

    path = tmp_path / "m.parquet"
    pd.DataFrame({"id": ["a", "b"], "portrait": ["p.jpg", "p.jpg"], "text": ["hi", "hi"],
                  "fps": [30, None]}).to_parquet(path)
    table = read_manifest(path)
    assert table.rows[0]["fps"] == "30" and table.rows[1]["fps"] is None
    assert validate_manifest(table.to_frame()) == {}


def test_long_script_and_unreadable_csv(tmp_path):
    long_text = "word " * 40000
    table = read_manifest(write(tmp_path, f'id,portrait,text\na,p.jpg,"{long_text}"\nb,p.jpg,hi\n'))
    assert len(table.rows[0]["text"]) > 150000 and table.line_numbers == [2, 3]
    with pytest.raises(ManifestError, match="not a readable CSV"):
        read_manifest(write(tmp_path, 'id,portrait\n"a,p.jpg\n', "bad.csv"))


def test_generated_identities_refine_and_style_columns(tmp_path):
    path = write(tmp_path,
                 "id,portrait,identity,refine,style,text\n"
                 "gen,,generate:42,,oil,hi\n"
                 "photo,a.png,,TRUE,none,hi\n"
                 "both,a.png,generate:1,,,hi\n"
                 "neither,,,,,hi\n"
                 "badseed,,generate:x,,,hi\n"
                 "badrefine,a.png,,maybe,,hi\n")
    table = read_manifest(path)
    errors = validate_manifest(table.to_frame())
    assert set(errors) == {2, 3, 4, 5}
    assert "exactly one of 'portrait' or 'identity'" in errors[2] and "exactly one" in errors[3]
    assert "generate:<seed>" in errors[4]
    assert "refine must be true or false" in errors[5]
    rows, quarantined = split_rows(table.rows, table.line_numbers, errors, "en")
    generated, photo = rows
    assert generated.generate_seed == 42 and generated.portrait is None and generated.style_name == "oil"
    assert photo.refine and photo.generate_seed is None and photo.style_name is None
    assert [q["id"] for q in quarantined] == ["both", "neither", "badseed", "badrefine"]


def test_fingerprint_follows_the_models_a_row_uses(tmp_path):
    generated = AvatarRow(id="g", line=2, identity="generate:7", text="hi")
    photo = AvatarRow(id="p", line=3, portrait="a.png", text="hi")
    before = {"avatarflow-gan": 1, "avatarflow-diffusion": 1}
    after = {"avatarflow-gan": 2, "avatarflow-diffusion": 1}
    assert row_fingerprint(generated, tmp_path, "{}", before) != row_fingerprint(generated, tmp_path, "{}", after)
    assert row_fingerprint(photo, tmp_path, "{}", before) == row_fingerprint(photo, tmp_path, "{}", after)


def test_transcript_column_is_checked_carried_and_fingerprinted(tmp_path):
    path = write(tmp_path, "\n".join([
        "id,portrait,text,audio,transcript",
        "ok,p.jpg,,a.wav,\"Maybe Bob, my friend.\"",
        "bare,p.jpg,,a.wav,",
        "with-text,p.jpg,hello,,Hello there",
        "no-words,p.jpg,,a.wav,\"... ?!\"",
        "cafe,p.jpg,,a.wav,caf\u00e9 \u00e0 Paris",
    ]) + "\n")
    table = read_manifest(path)
    errors = validate_manifest(table.to_frame())
    assert errors == {2: "a 'transcript' goes only with 'audio' (it says what the recording says)",
                      3: "transcript has no words (it needs at least one letter or digit)"}
    valid, _ = split_rows(table.rows, table.line_numbers, errors, "en")
    assert [(r.id, r.transcript) for r in valid] == [("ok", "Maybe Bob, my friend."), ("bare", None),
                                                     ("cafe", "caf\u00e9 \u00e0 Paris")]
    row = valid[0]
    assert row_fingerprint(row, tmp_path, "{}") != row_fingerprint(
        AvatarRow(id="ok", line=2, portrait="p.jpg", audio="a.wav", transcript="Maybe Rob, my friend."),
        tmp_path, "{}")
