"""Deferred and hidden imports: a placeholder module that reads through to the real one from its first use,
a package made to look not installed, and the manifest gate's child, which defers what great-expectations
imports but no suite uses and hides its optional back ends."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

from stores.expectations import ManifestLimits, validate_manifest
from stores.manifest import read_manifest

REPO = str(Path(__file__).resolve().parents[2])

DEFERRED_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from infra.deferred_imports import defer_imports, is_deferred
defer_imports("colorsys", "os")  # os is loaded already: it stays as it is
import colorsys, os
print(is_deferred(os), is_deferred(colorsys), "rgb_to_hsv" in vars(colorsys), hasattr(colorsys, "__file__"))
hue = colorsys.rgb_to_hsv(0.0, 1.0, 0.0)[0]
from colorsys import hls_to_rgb
print(is_deferred(colorsys), round(hue * 360), hls_to_rgb(0.0, 0.5, 0.0) == (0.5, 0.5, 0.5))
import colorsys as later
later.ONE_THIRD = 0.5  # a change to the real module shows through the placeholder
print(later is not colorsys, colorsys.ONE_THIRD, colorsys.__file__ == later.__file__)
"""


def test_a_deferred_module_loads_on_its_first_attribute_and_then_reads_through_to_the_real_one():
    completed = subprocess.run([sys.executable, "-c", DEFERRED_PROBE, REPO], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    before, after, later = completed.stdout.splitlines()
    assert before.split() == ["False", "True", "False", "False"]  # a placeholder: nothing of colorsys loaded
    assert after.split() == ["False", "120", "True"]
    assert later.split() == ["True", "0.5", "True"]


HIDDEN_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import colorsys  # already imported: hiding does not take it away
from infra.deferred_imports import hide_imports
hide_imports("email", "xml.dom")
for name in ("email", "email.mime.text", "xml.dom.minidom", "xml.etree.ElementTree"):
    try:
        __import__(name)
        print(name, "imported")
    except ModuleNotFoundError as error:
        print(name, "missing", error.name)
print("colorsys", "kept" if colorsys.rgb_to_hsv else "")
"""


def test_a_hidden_package_and_its_modules_fail_to_import_as_if_not_installed():
    completed = subprocess.run([sys.executable, "-c", HIDDEN_PROBE, REPO], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        "email missing email", "email.mime.text missing email", "xml.dom.minidom missing xml.dom",
        "xml.etree.ElementTree imported", "colorsys kept"]


GATE_CHILD = """
import json, runpy, sys
sys.path.insert(0, sys.argv[1])
try:
    runpy.run_module("stores.expectations", run_name="__main__")  # as `python -m stores.expectations` runs it
finally:
    from infra.deferred_imports import is_deferred
    from stores.expectations import GATE_DEFERRED_IMPORTS, GATE_HIDDEN_IMPORTS
    loaded = [name for name in GATE_DEFERRED_IMPORTS if not is_deferred(sys.modules[name])]
    loaded += [name for name in sys.modules
               if any(name == hidden or name.startswith(hidden + ".") for hidden in GATE_HIDDEN_IMPORTS)]
    print(json.dumps(loaded), file=sys.stderr)
"""


def test_the_gate_child_checks_a_manifest_without_loading_what_it_defers_or_hides(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("id,portrait,text,audio,fps\nok,p.jpg,hello,,25\nbad id!,p.jpg,hi,,\nboth,p.jpg,hi,x.wav,99\n")
    request = pickle.dumps((read_manifest(path).to_frame(), ManifestLimits()))
    completed = subprocess.run([sys.executable, "-c", GATE_CHILD, REPO], input=request, capture_output=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr.decode()[-2000:]
    errors = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    assert {int(index): message for index, message in errors.items()} == validate_manifest(read_manifest(path).to_frame())
    assert set(errors) == {"1", "2"}
    loaded_for_real = json.loads(completed.stderr.decode().strip().splitlines()[-1])
    # scipy.stats and altair stayed placeholders (great-expectations never read them); no SQL or cloud back end
    assert loaded_for_real == []
