"""A manifest row after validation, with the defaults filled in."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AvatarRow:
    """One manifest row: who to build and what they say."""

    id: str
    """Unique avatar id, also the output folder name."""
    line: int
    """Line (CSV) or row number (Parquet) in the manifest, for error messages."""
    portrait: str | None = None
    """Portrait image path as written in the manifest; None for a generated identity."""
    identity: str | None = None
    """`generate:<seed>`: a new face drawn from the production GAN instead of a portrait."""
    refine: bool = False
    """Pass the portrait through the diffusion refiner (SDEdit) before reconstruction."""
    style: str | None = None
    """Style preset name or style image path for the texture; None or "none" keeps it."""
    text: str | None = None
    """Script spoken by espeak-ng; at most one of text and audio is set (one of them without a video)."""
    audio: str | None = None
    """Speech recording path as written in the manifest."""
    video: str | None = None
    """Driving video path as written in the manifest: its face performance drives the rig, its sound
    is the output's (unless text or audio replaces it), and with no portrait or identity its best
    frame is the portrait."""
    transcript: str | None = None
    """What the `audio` recording says; English transcripts are force-aligned to drive the visemes."""
    language: str = "en"
    """espeak-ng language code for the text."""
    voice: str | None = None
    """espeak-ng voice name; overrides the language's default voice."""
    fps: int = 25
    """Frames per second of the animation and the video."""
    resolution: int = 512
    """Side of the square output video in pixels."""
    emotion: str | None = None
    """Emotion spec as written (`happy`, `happy:0.6`, `neutral@0,happy@2.5`); parsed by tasks.animate.emotion."""

    @property
    def generate_seed(self) -> int | None:
        """The seed of a `generate:<seed>` identity, else None."""
        if self.identity is None:
            return None
        return int(self.identity.removeprefix("generate:"))

    @property
    def style_name(self) -> str | None:
        """The style to apply, or None when the texture stays as it is."""
        return None if self.style is None or self.style.lower() == "none" else self.style

    @property
    def seed(self) -> int:
        """A stable per-avatar seed, so re-runs of a row animate the same way; 31 bits, since
        Cycles takes a signed 32-bit seed."""
        return int.from_bytes(hashlib.sha256(self.id.encode("utf-8")).digest()[:4], "little") & 0x7FFFFFFF

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, values: dict[str, str | None], line: int, default_language: str = "en") -> "AvatarRow":
        return cls(
            id=str(values["id"]),
            line=line,
            portrait=values.get("portrait"),
            identity=values.get("identity"),
            refine=str(values.get("refine") or "false").strip().lower() in ("true", "yes", "1"),
            style=values.get("style"),
            text=values.get("text"),
            audio=values.get("audio"),
            video=values.get("video"),
            transcript=values.get("transcript"),
            language=values.get("language") or default_language,
            voice=values.get("voice"),
            fps=int(values.get("fps") or 25),
            resolution=int(values.get("resolution") or 512),
            emotion=values.get("emotion"),
        )
