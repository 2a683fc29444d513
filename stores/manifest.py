"""Read a manifest (CSV or Parquet) into rows of strings, keeping byte-level problems per row.
The manifest is a local file or an fsspec URL (`s3://bucket/inputs/nightly.csv`)."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stores.location import DataLocation, is_url

REQUIRED_COLUMNS = ("id",)
FACE_COLUMNS = ("portrait", "identity", "video")
"""At least one of these must be a column: a row gets its face from a photo, a generator or a
driving video's best frame."""
OPTIONAL_COLUMNS = ("portrait", "identity", "refine", "style", "text", "audio", "transcript", "language", "voice", "fps",
                    "resolution", "emotion", "video")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


# Scripts can be long; the csv module's default field limit is 128 KiB.
csv.field_size_limit(16 * 1024 * 1024)

MAX_MANIFEST_BYTES = 256 * 1024 * 1024
"""A manifest is read into memory whole; anything larger is refused before it is read."""


class ManifestError(Exception):
    """The manifest as a whole cannot be used (unreadable, unknown or missing columns)."""


@dataclass
class ManifestTable:
    """A manifest as read: one dict of strings per row, plus per-row decoding errors."""

    path: Path | DataLocation
    """The manifest file: a local path, or a DataLocation for a URL manifest."""
    rows: list[dict[str, str]]
    line_numbers: list[int]
    row_errors: dict[int, str] = field(default_factory=dict)
    sha256: str = ""
    """Digest of the bytes read, so a run records exactly which manifest it planned from."""

    @property
    def folder(self) -> Path | DataLocation:
        """Where relative input paths resolve: the manifest's folder (the parent URL for a URL)."""
        return self.path.parent

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(KNOWN_COLUMNS), dtype=object)
        return frame.where(frame.notna(), None)


def _has_undecodable(value: str) -> bool:
    # surrogateescape maps each undecodable byte to U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _check_columns(columns: list[str], path: Path | DataLocation) -> None:
    # A repeated column would let its last copy silently win.
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ManifestError(f"{path.name}: duplicate column(s) {', '.join(repr(c) for c in duplicates)}; "
                            "each column may appear only once")
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown:
        raise ManifestError(
            f"{path.name}: unknown column(s) {', '.join(repr(c) for c in unknown)}; "
            f"allowed columns are {', '.join(KNOWN_COLUMNS)}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"{path.name}: missing required column(s) {', '.join(missing)}")
    if not any(c in columns for c in FACE_COLUMNS):
        raise ManifestError(f"{path.name}: needs a 'portrait' column (photo paths), an 'identity' column "
                            "(generate:<seed> for a new face) or a 'video' column (driving videos)")


def _clean(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric Parquet column with gaps is stored as float
    text = str(value).strip()
    return text or None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _manifest_size(path: Path | DataLocation) -> int:
    """The manifest's size; ManifestError when it is missing or not a file."""
    if isinstance(path, Path):
        if path.is_dir():
            raise ManifestError(f"manifest is a directory, not a file: {path}")
        if not path.exists():
            raise ManifestError(f"manifest not found: {path}")
        if not path.is_file():
            raise ManifestError(f"manifest is not a regular file: {path}")
        return path.stat().st_size
    try:
        info = path.info()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except Exception as error:  # each object store's client raises its own types (credentials, network, …)
        raise ManifestError(f"manifest cannot be read: {path} ({_one_line(error)})") from None
    if info.get("type") != "file":
        raise ManifestError(f"manifest is not a file: {path}")
    return int(info.get("size") or 0)


_BINARY_KINDS = (
    (b"PAR1", "it is a Parquet file: name it .parquet"),
    (b"PK\x03\x04", "it is a ZIP archive or an Excel workbook: save it as CSV"),
    (b"\xd0\xcf\x11\xe0", "it is an old Excel workbook: save it as CSV"),
    (b"\xff\xfe", "it is UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "it is UTF-16 text: save it as UTF-8"),
    (b"\x89PNG", "it is a PNG image"),
    (b"\xff\xd8\xff", "it is a JPEG image"),
    (b"%PDF", "it is a PDF document"),
    (b"\x1f\x8b", "it is gzip-compressed: decompress it first"),
)
"""Leading bytes of files that are often given as a manifest by mistake, and what to say about them."""


def _binary_kind(data: bytes) -> str | None:
    """Why a manifest is not CSV text (binary data, a known kind of file, another encoding); None for text.
    Only the header line must be text: a stray non-UTF-8 byte in a data row is that row's error."""
    for magic, kind in _BINARY_KINDS:
        if data.startswith(magic):
            return kind
    header = data.lstrip(b"\xef\xbb\xbf").split(b"\n", 1)[0]
    if b"\0" in data[:65536]:
        return "it holds binary data"
    text = header.decode("utf-8", errors="replace")
    if any(ord(ch) < 32 and ch not in "\t\r" for ch in text):
        return "it holds binary data"
    undecodable = text.count("\ufffd")
    if undecodable > max(2, len(text) // 10):
        return "it holds binary data"
    if undecodable:
        return "its header is not UTF-8: save it as UTF-8"
    return None


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the 4 KB mark
            return False
    return b"\0" not in head


def _read_manifest_bytes(path: Path | DataLocation) -> bytes:
    """The manifest's bytes, after the checks that need no parsing: found, a file, not empty, not too large."""
    size = _manifest_size(path)
    if size == 0:
        raise ManifestError(f"manifest is empty: {path}")
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path.name}: manifest is too large ({size / 1e6:.1f} MB > "
                            f"{MAX_MANIFEST_BYTES / 1e6:.1f} MB)")
    try:
        return path.read_bytes()
    except Exception as error:  # as above: OSError locally, the store client's own types for a URL
        raise ManifestError(f"{path.name}: manifest cannot be read ({_one_line(error)})") from None


def read_manifest(path: str | os.PathLike | DataLocation) -> ManifestTable:
    """Read a CSV or Parquet manifest, a local file or an fsspec URL. Non-UTF-8 fields become a
    row error, not a failed file."""
    if isinstance(path, DataLocation) and path.is_local:
        path = path.local_path
    elif not isinstance(path, DataLocation):
        path = DataLocation(path) if is_url(path) else Path(path)
    if isinstance(path, DataLocation):
        try:
            path.parent  # relative inputs resolve against it
        except ValueError as error:
            raise ManifestError(f"manifest URL must name a file in a bucket or folder: {error}") from None
    data = _read_manifest_bytes(path)

    row_errors: dict[int, str] = {}
    if path.name.lower().endswith((".parquet", ".pq")):
        if not data.startswith(b"PAR1"):
            hint = "it holds text, perhaps CSV: name it .csv" if _looks_like_text(data) else "no Parquet header"
            raise ManifestError(f"{path.name}: not a Parquet file ({hint})")
        try:
            import pyarrow.parquet as pq

            # The schema first: a duplicate column must be seen before pandas or pyarrow resolve it.
            parquet = pq.ParquetFile(io.BytesIO(data))
            schema = parquet.schema_arrow
            index_columns = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
            columns = [str(c) for c in schema.names if c not in index_columns]
            _check_columns(columns, path)
            frame = parquet.read().to_pandas()
        except ManifestError:
            raise
        except Exception as exc:  # pyarrow raises many types for a corrupt file
            raise ManifestError(f"{path.name}: not a readable Parquet file ({_one_line(exc)})") from None
        raw_rows = []
        for index, record in enumerate(frame.to_dict(orient="records")):
            row = {}
            for key, value in record.items():
                if isinstance(value, bytes):
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError:
                        row_errors[index] = f"column '{key}' is not valid UTF-8"
                        value = value.decode("utf-8", errors="replace")
                row[str(key)] = _clean(value)
            raw_rows.append(row)
        line_numbers = [i + 1 for i in range(len(raw_rows))]
    else:
        kind = _binary_kind(data)
        if kind is not None:  # described, never echoed: its bytes would garble the terminal
            raise ManifestError(f"{path.name}: not a CSV text file ({kind})")
        try:
            text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
            reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            records = list(reader)
        except (OSError, csv.Error) as error:
            raise ManifestError(f"{path.name}: not a readable CSV file ({error})") from None
        _check_columns(columns, path)
        raw_rows, line_numbers = [], []
        line = 1
        for index, record in enumerate(records):
            row = {}
            for key, value in record.items():
                if key is None:  # more fields than header columns
                    row_errors[index] = "row has more fields than the header"
                    continue
                if value is not None and _has_undecodable(value):
                    row_errors[index] = f"column '{key.strip()}' is not valid UTF-8"
                    value = value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
                row[key.strip()] = _clean(value)
            raw_rows.append(row)
            line += 1 + sum(str(v).count("\n") for v in record.values() if isinstance(v, str))
            line_numbers.append(line)
    if not raw_rows:
        raise ManifestError(f"{path.name}: the manifest has no rows")
    rows = [{c: row.get(c) for c in KNOWN_COLUMNS} for row in raw_rows]
    return ManifestTable(path=path, rows=rows, line_numbers=line_numbers, row_errors=row_errors,
                         sha256=hashlib.sha256(data).hexdigest())
