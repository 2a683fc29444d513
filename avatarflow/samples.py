"""The sample job: a manifest built from data that installed packages ship (scikit-image's
public-domain NASA astronaut portrait) plus scripts espeak-ng speaks, and, where the shared sample
folder exists beside the repository, a few rows that use its portraits and speech clips."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

BUNDLED_MANIFEST = Path(__file__).with_name("samples") / "manifest.csv"
SHARED_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
SHARED_ROWS = [
    {"id": "sfhq_speech", "portrait": "portraits/sfhq_pt1_00000161.jpg", "audio": "audio/en_em_echomimic_en.wav",
     "refine": "true"},
    {"id": "mona_lisa_fr", "portrait": "portraits/lp_s9_mona_lisa.jpg",
     "text": "Bonjour. Je suis un double numérique, et je parle français.", "language": "fr"},
]


GENERATED_ROWS = [
    {"id": "generated_7", "identity": "generate:7", "text": "Nobody has ever seen my face before today."},
    {"id": "generated_42", "identity": "generate:42", "text": "I was drawn from seed forty-two."},
]
"""Rows added only when both generators have a production version in the data dir (trained by
`avatarflow train` and passed their promotion gates); without one these rows would only fail."""


def write_sample_manifest(folder: Path, with_generated: bool = False) -> tuple[Path, list[str]]:
    """Write the sample manifest and its portrait into `folder`; return it and the extra input
    roots. `with_generated` adds rows that draw new identities from the production GAN."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    with BUNDLED_MANIFEST.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    roots = []
    if SHARED_SAMPLES.is_dir():
        roots.append(str(SHARED_SAMPLES))
        for row in SHARED_ROWS:
            if not with_generated:  # refining needs a diffusion model in production
                row = {k: v for k, v in row.items() if k != "refine"}
            rows.append({k: str(SHARED_SAMPLES / v) if k in ("portrait", "audio") else v for k, v in row.items()})
    if with_generated:
        rows.extend(GENERATED_ROWS)
    columns = ["id", "portrait", "identity", "refine", "style", "text", "audio", "language"]
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return manifest, roots


SHARED_TRAINING_DATA = [SHARED_SAMPLES.parent / "faces128", SHARED_SAMPLES / "portraits", SHARED_SAMPLES / "video"]


def default_training_data() -> list[str]:
    """The shared face folders beside the repository, where they exist."""
    return [str(path) for path in SHARED_TRAINING_DATA if path.is_dir()]
