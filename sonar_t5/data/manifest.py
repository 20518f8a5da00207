"""TSV manifests in three layouts, read with quoting off.

1. a header naming an id and a text column (+ optional length and feature-path columns);
2. How2Sign's own how2sign_realigned_*.csv (tab-separated; id SENTENCE_NAME, text SENTENCE);
3. headerless `id<TAB>length<TAB>text` (ssvp_slt) or `id<TAB>text`.
Quotes are text: `"` and `'` survive byte for byte.
"""
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from sonar_t5.common.errors import UserError

# Aliases in priority order (How2Sign has both VIDEO_NAME and SENTENCE_NAME: a sentence is
# the sample). Matched case-insensitively.
ID_COLUMNS = ("id", "sentence_name", "name", "video_name")
TEXT_COLUMNS = ("tgt_text", "text", "translation", "label", "caption", "sentence")
LENGTH_COLUMNS = ("n_frames", "length")
PATH_COLUMNS = ("features", "feature_path", "signs_file")
KNOWN_COLUMNS = set(ID_COLUMNS + TEXT_COLUMNS + LENGTH_COLUMNS + PATH_COLUMNS)

csv.field_size_limit(sys.maxsize)


@dataclass
class ManifestRow:
    id: str
    text: str
    line: int
    length: int = None
    feature_path: str = None


HOW2SIGN_COLUMNS = {"video_id", "video_name", "sentence_id", "sentence_name", "sentence"}


def is_how2sign(path):
    """How2Sign's own manifest (how2sign_realigned_*.csv, or a file with its columns)."""
    if Path(path).name.lower().startswith("how2sign"):
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
    except OSError:
        return False
    return HOW2SIGN_COLUMNS <= {c.strip().lower() for c in header.split("\t")}


def _first(columns, aliases):
    lowered = [c.strip().lower() for c in columns]
    return next((lowered.index(a) for a in aliases if a in lowered), None)


def _read_lines(path):
    path = Path(path)
    if not path.is_file():
        raise UserError("manifest not found", str(path), "check --*_manifest")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except UnicodeDecodeError as error:
        raise UserError(f"manifest is not UTF-8 (byte {error.start})", str(path),
                        "re-save it as UTF-8") from None


def _layout(path, first_row):
    """-> (has_header, column indices {id, text, length, path})."""
    id_col, text_col = _first(first_row, ID_COLUMNS), _first(first_row, TEXT_COLUMNS)
    if KNOWN_COLUMNS & {c.strip().lower() for c in first_row}:
        if id_col is None or text_col is None:
            missing = "an id" if id_col is None else "a text"
            raise UserError(f"manifest header has no {missing} column (columns: "
                            f"{', '.join(first_row)})", f"{path}:1",
                            f"name one of {', '.join(ID_COLUMNS if id_col is None else TEXT_COLUMNS)}")
        return True, dict(id=id_col, text=text_col, length=_first(first_row, LENGTH_COLUMNS),
                          path=_first(first_row, PATH_COLUMNS))
    if len(first_row) == 1 and "," in first_row[0]:
        raise UserError("manifest is not tab-separated: line 1 has commas and no tabs",
                        f"{path}:1", "save it with tabs between the columns (TSV)")
    if len(first_row) == 3:
        return False, dict(id=0, length=1, text=2, path=None)
    if len(first_row) == 2:
        return False, dict(id=0, text=1, length=None, path=None)
    raise UserError(f"cannot tell the manifest's layout: line 1 has {len(first_row)} fields "
                    "and no header", f"{path}:1",
                    "add a header row with id and text columns, or use id<TAB>text")


def read_manifest(path):
    """-> list of ManifestRow, after checking field counts, empty texts and duplicate ids."""
    lines = _read_lines(path)
    if not lines:
        raise UserError("manifest is empty", str(path), "point at a manifest with rows")
    has_header, cols = _layout(path, lines[0][1])
    width = len(lines[0][1])
    rows, seen = [], {}
    for line, fields in lines[1:] if has_header else lines:
        if len(fields) != width:
            raise UserError(f"line has {len(fields)} tab-separated fields, expected {width}",
                            f"{path}:{line}", "fix that line (a tab inside the text?)")
        row = ManifestRow(id=fields[cols["id"]].strip(), text=fields[cols["text"]], line=line)
        if not row.id:
            raise UserError("row has an empty id", f"{path}:{line}", "give every row an id")
        if not row.text.strip():
            raise UserError(f"row '{row.id}' has empty text", f"{path}:{line}",
                            "remove the row or fill in its text")
        if row.id in seen:
            raise UserError(f"duplicate id '{row.id}' (first on line {seen[row.id]})",
                            f"{path}:{line}", "ids must be unique")
        seen[row.id] = line
        if cols["length"] is not None:
            row.length = _parse_length(fields[cols["length"]], path, line)
        if cols["path"] is not None and fields[cols["path"]].strip():
            row.feature_path = fields[cols["path"]].strip()
        rows.append(row)
    if not rows:
        raise UserError("manifest has a header but no rows", str(path))
    return rows


def _parse_length(value, path, line):
    try:
        length = int(value)
    except ValueError:
        raise UserError(f"length '{value}' is not a whole number", f"{path}:{line}",
                        "fix the length column, or drop it") from None
    if length < 1:
        raise UserError(f"length {length} is not positive", f"{path}:{line}")
    return length
