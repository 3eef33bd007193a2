"""Batch manifests: a CSV or JSONL file of render requests, one row each. Pure parsing, no I/O.

A row names its cameo(s) (`cameo`, several separated by `;`), a `script` (a template where
`{column}` is filled from the row's other columns, `{{` and `}}` for braces), and optionally
`tier`, `scene`, `prompt`, `background`, `language`, `captions` (`burned` draws them into
the video too), `output` (the video's name; default `row-N`) and `client_token`. Other
columns are the template's values. Rows are numbered as a spreadsheet shows them: in a CSV
the header is row 1, in JSONL each line is its own row.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_ROWS = 10_000
MAX_FIELD_CHARS = 4000
_OUTPUT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


class ManifestError(ValueError):
    """The file as a whole cannot be read as a manifest (not one bad row)."""


@dataclass(frozen=True)
class ManifestRow:
    """One render request of a manifest, its script filled in."""

    row: int
    cameo_ids: tuple[str, ...]
    script: str
    output: str
    tier: str | None = None
    scene: str | None = None
    prompt: str | None = None
    background: str | None = None
    language: str | None = None
    client_token: str | None = None
    captions: str | None = None  # "sidecar" (the default) or "burned"


@dataclass(frozen=True)
class RowProblem:
    """Why a row cannot be rendered."""

    row: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "reason": self.reason}


def fill_template(template: str, values: dict[str, str]) -> str:
    """`{name}` replaced by the row's value for `name`; raise ValueError naming a missing
    one or a stray brace. Values are inserted as text, never interpreted."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            raise ValueError(
                "the script has a stray brace: write {column} for a value, {{ or }} for a brace"
            )
        value = values.get(name.lower())
        if value is None or value == "":
            raise ValueError(f"the script uses {{{name}}} but the row has no {name} value")
        return value

    return _PLACEHOLDER.sub(one, template)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(_text(v) for v in value)
    return str(value).strip()


def _records(data: bytes, filename: str) -> list[tuple[int, dict[str, str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(
            f"{filename} is not UTF-8 text; save it as UTF-8 CSV or JSONL"
        ) from None
    if filename.lower().endswith(".jsonl"):
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise ManifestError(f"line {n} is not JSON: {exc}") from None
            if not isinstance(item, dict):
                raise ManifestError(f"line {n} is not a JSON object")
            records.append((n, {str(k).strip().lower(): _text(v) for k, v in item.items()}))
        return records
    if not filename.lower().endswith(".csv"):
        raise ManifestError(f"{filename}: a manifest is a .csv or .jsonl file")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ManifestError(f"{filename} is empty") from None
    except csv.Error as exc:
        raise ManifestError(f"{filename}: {exc}") from None
    if "script" not in header or not ({"cameo", "cameos"} & set(header)):
        raise ManifestError(
            f"{filename}: the header must name at least the columns cameo and script "
            f"(found: {', '.join(header)[:200]})"
        )
    records = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            records.append(
                (reader.line_num, {h: c.strip() for h, c in zip(header, cells, strict=False)})
            )
    except csv.Error as exc:
        raise ManifestError(f"{filename} row {reader.line_num}: {exc}") from None
    return records


def parse_manifest(data: bytes, filename: str) -> tuple[list[ManifestRow], list[RowProblem]]:
    """Every row of the file, and the problems of the rows that cannot be read (template,
    output name, duplicates); raise ManifestError when the file itself is unreadable."""
    records = _records(data, filename)
    if not records:
        raise ManifestError(f"{filename} has no rows")
    if len(records) > MAX_ROWS:
        raise ManifestError(f"{filename} has {len(records)} rows; a batch takes at most {MAX_ROWS}")
    rows: list[ManifestRow] = []
    problems: list[RowProblem] = []
    outputs: dict[str, int] = {}
    tokens: dict[str, int] = {}
    for n, values in records:
        if "cameos" in values and "cameo" not in values:
            values["cameo"] = values.pop("cameos")
        long = [k for k, v in values.items() if len(v) > MAX_FIELD_CHARS]
        if long:
            problems.append(RowProblem(n, f"{long[0]} is over {MAX_FIELD_CHARS} characters"))
            continue
        cameos = tuple(c for c in re.split(r"[;,\s]+", values.get("cameo", "")) if c)
        if not cameos:
            problems.append(RowProblem(n, "no cameo: name one in the cameo column"))
            continue
        if not values.get("script"):
            problems.append(RowProblem(n, "no script"))
            continue
        try:
            script = fill_template(values["script"], values)
        except ValueError as exc:
            problems.append(RowProblem(n, str(exc)))
            continue
        output = values.get("output") or f"row-{n}"
        if not _OUTPUT.fullmatch(output):
            problems.append(
                RowProblem(n, f"output {output[:60]!r} must be 1-100 letters, digits, . _ or -")
            )
            continue
        if output in outputs:
            problems.append(RowProblem(n, f"output {output!r} is also row {outputs[output]}'s"))
            continue
        token = values.get("client_token") or None
        if token is not None and token in tokens:
            problems.append(RowProblem(n, f"client_token is also row {tokens[token]}'s"))
            continue
        outputs[output] = n
        if token is not None:
            tokens[token] = n
        rows.append(
            ManifestRow(
                row=n,
                cameo_ids=cameos,
                script=script,
                output=output,
                tier=values.get("tier") or None,
                scene=values.get("scene") or None,
                prompt=values.get("prompt") or None,
                background=values.get("background") or None,
                language=values.get("language") or None,
                client_token=token,
                captions=values.get("captions", "").lower() or None,
            )
        )
    return rows, problems
