"""The data stage: read a study table, validate it, and choose the studies an analysis uses.

Format: a UTF-8 CSV (a BOM and CRLF line ends are accepted), one row per study x outcome.

Required columns: ``study_id``, ``events_treat``, ``total_treat``; ``outcome`` unless the file holds one outcome.
Optional columns: ``events_control``, ``total_control`` (both empty for a single-arm row) and any
metadata columns; ``overlap_group`` and ``count_basis`` are used by the inclusion rules when present.

A row may carry a reported effect (typically a confounding-adjusted odds ratio) in ``measure`` (OR or RR),
``estimate``, ``ci_low``, ``ci_high`` (a 95% CI) and optionally ``adjusted`` (true/false): with the counts (the
estimate is used for the two-arm analyses of the normal model and the frequentist engine, the counts for the
binomial models and treatment-arm rates) or instead of them (the counts then left empty). ``design``, when present,
is ``rct``, ``observational``, ``comparative`` (randomisation not stated: treated as non-randomised) or
``single_arm``.

Column names are matched without regard to case, and metafor's names are accepted (:data:`ALIASES`): the 2x2 cells
``ai, bi, ci, di`` (or ``tpos, tneg, cpos, cneg``; the totals are ai + bi and ci + di), ``n1i``/``n2i`` for the
totals, ``xi``/``ni`` for single-arm counts, and ``study``, ``trial``, ``author`` or ``id`` for the study label.
A file without an ``outcome`` column holds one outcome, named after its description's only outcome or else after
the file (``bcg.csv`` -> ``bcg``).

Every problem is raised as :class:`~rescuemeta.errors.InputError` naming the file, the row (data row,
1-based, with its line number) and the column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from .description import Description, load_description
from .errors import InputError

__all__ = ["REQUIRED", "COUNT_COLUMNS", "COUNT_BASIS", "ESTIMATE_COLUMNS", "DESIGNS",
           "DEFAULT_DATA", "MAX_COUNT", "ALIASES", "NON_EVENTS",
           "StudyTable", "Selection", "load_studies", "parse_exclude_basis", "select"]

REQUIRED = ("study_id", "outcome", "events_treat", "total_treat")
COUNT_COLUMNS = ("events_treat", "total_treat", "events_control", "total_control")
COUNT_BASIS = ("reported", "from_percent", "denominator_fitted", "approximate")
DEFAULT_DATA = Path("data/studies.csv")
MAX_COUNT = 10**9  # larger counts are almost surely a typo (and would lose precision in float64)

_INT_RE = re.compile(r"^[+-]?\d+(\.0*)?$")

# other names for our columns, in order of preference (metafor's escalc() names first)
ALIASES = {
    "study_id": ("study", "trial", "id", "author"),
    "events_treat": ("ai", "tpos", "x1i", "xi"),
    "total_treat": ("n1i", "ni"),
    "events_control": ("ci", "cpos", "x2i"),
    "total_control": ("n2i",),
}
# non-event cells: total = events + non-events
NON_EVENTS = {"total_treat": ("events_treat", ("bi", "tneg")), "total_control": ("events_control", ("di", "cneg"))}
ESTIMATE_COLUMNS = ("measure", "estimate", "ci_low", "ci_high")
ESTIMATE_MEASURES = ("OR", "RR")
DESIGNS = ("rct", "observational", "comparative", "single_arm")
RANDOMISED = ("rct",)  # the designs treated as free of confounding bias (every other comparative row is not)
CI_Z = 1.959963984540054  # a 95% CI: SE = (log upper - log lower) / (2 z)
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_KNOWN = set(REQUIRED) | set(COUNT_COLUMNS) | {"overlap_group", "count_basis", *ESTIMATE_COLUMNS, "adjusted",
                                                "design"}


def _plain(value):
    """numpy scalars as plain Python values, so that messages never show ``np.int64(-6)``."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _map_header(header: list[str], path) -> tuple[list[str], dict, dict]:
    """Our column names for the file's header: case-insensitive, metafor's aliases, bi/di as non-event cells.

    Returns the new header, ``{ours: the file's name}`` for messages, and ``{total column: (events column,
    non-events column in the file)}`` for totals that are sums of two cells."""
    lower = [h.lower() for h in header]
    names = list(lower)
    original = {}
    for ours in (*REQUIRED, *COUNT_COLUMNS):
        if ours in names:
            original[ours] = header[names.index(ours)]
            continue
        for alias in ALIASES.get(ours, ()):
            if alias in names:
                i = names.index(alias)
                names[i] = ours
                original[ours] = header[i]
                break
    sums = {}
    for total, (events, cells) in NON_EVENTS.items():
        if total in names:
            continue
        for cell in cells:
            if cell in names and events in names:
                sums[total] = (events, header[names.index(cell)])
                original[total] = f"{original.get(events, events)} + {header[names.index(cell)]}"
                break
    for h in names:
        if h in _KNOWN and names.count(h) > 1:
            raise InputError(f"column {h!r} is given twice (under different names or cases)", file=path, column=h)
    return names, original, sums


def _near_miss(name: str, header: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, [h.lower() for h in header], n=1, cutoff=0.7)
    if not close:
        return ""
    return f" (did you mean {header[[h.lower() for h in header].index(close[0])]!r}?)"


@dataclass
class StudyTable:
    """A validated study table.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per study x outcome; counts as nullable integers; ``_line`` holds each row's line number.
    path : str
        Where it was read from.
    sha256 : str
        Hash of the file's bytes (recorded with results for provenance).
    description : Description
        What the data are about (title, arm names, evidence note, outcome labels and which direction is
        benefit), from the TOML beside the file; neutral words when there is none.
    """

    frame: pd.DataFrame
    path: str
    sha256: str
    description: Description = field(default_factory=Description)

    @property
    def outcomes(self) -> list[str]:
        return sorted(self.frame["outcome"].unique())

    def resolve_outcome(self, outcome: str | None, hint: str = "--outcome NAME") -> str:
        """``outcome``, or the file's only outcome when none is named.

        Raises InputError naming the outcomes in the file when it has several and none is named."""
        if outcome is not None:
            return outcome
        if len(self.outcomes) == 1:
            return self.outcomes[0]
        raise InputError(f"the file has {len(self.outcomes)} outcomes; choose one with {hint}: "
                         f"{', '.join(self.outcomes)}", file=self.path)


@dataclass
class Selection:
    """The rows one analysis uses, and why.

    Attributes
    ----------
    frame : pandas.DataFrame
        The included rows.
    outcome : str
    arms : {"two", "one"}
        ``two``: comparative rows (both arms); ``one``: the treatment arm of every row.
    rule : str
        The inclusion rule in words.
    excluded : list of (study_id, reason)
    """

    frame: pd.DataFrame
    outcome: str
    arms: str
    rule: str
    excluded: list[tuple[str, str]] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.frame)

    @property
    def study_ids(self) -> list[str]:
        return list(self.frame["study_id"])

    def counts(self):
        """``(ai, n1i, ci, n2i)`` as float arrays (``ci``/``n2i`` are None for one-arm selections)."""
        f = self.frame
        ai = f["events_treat"].to_numpy(dtype=float)
        n1i = f["total_treat"].to_numpy(dtype=float)
        if self.arms == "one":
            return ai, n1i, None, None
        return ai, n1i, f["events_control"].to_numpy(dtype=float), f["total_control"].to_numpy(dtype=float)

    @property
    def reported(self) -> np.ndarray:
        """Per included row: True where the row's reported estimate (not its counts) is the comparative effect."""
        if "_use_estimate" not in self.frame:
            return np.zeros(self.k, dtype=bool)
        return self.frame["_use_estimate"].to_numpy(dtype=bool)

    @property
    def randomised(self) -> np.ndarray:
        """Per included row: True for ``design = rct``; every other row is treated as non-randomised."""
        if "design" not in self.frame:
            return np.zeros(self.k, dtype=bool)
        return np.array([str(v).strip().lower() in RANDOMISED for v in self.frame["design"]])

    def effect_sizes(self, measure: str, cc=None):
        """Log ratios and their variances for a two-arm analysis: metafor's ``escalc`` on the count rows
        (continuity correction ``cc``), the log of the reported estimate and SE = (log ci_high - log ci_low) /
        (2 x 1.96) on the reported rows (metafor's ``rma(yi, sei = ...)``).

        Returns
        -------
        (yi, vi, reported) : three arrays over the included rows; ``reported`` marks the estimate rows.
        """
        from .effects import ContinuityCorrection, escalc

        rep = self.reported
        ai, n1i, ci, n2i = self.counts()
        yi, vi = np.full(self.k, np.nan), np.full(self.k, np.nan)
        cnt = ~rep
        if cnt.any():
            es = escalc(measure, ai[cnt], n1i[cnt], ci[cnt], n2i[cnt], cc or ContinuityCorrection())
            yi[cnt], vi[cnt] = es.yi, es.vi
        if rep.any():
            f = self.frame[rep]
            bad = sorted({m for m in f["measure"] if m != measure})
            if bad:
                raise InputError(f"rows {', '.join(f['study_id'])} report an {bad[0]}, not an {measure}; analyse them "
                                 f"on the {bad[0]} scale or with --counts-only")
            yi[rep] = np.log(f["estimate"].to_numpy(dtype=float))
            vi[rep] = ((np.log(f["ci_high"].to_numpy(dtype=float)) - np.log(f["ci_low"].to_numpy(dtype=float)))
                       / (2 * CI_Z)) ** 2
        return yi, vi, rep

    def columns(self, names) -> dict[str, list]:
        """The values of study-table columns (moderators) for the included rows, missing values as None;
        InputError naming the columns there are for an unknown one."""
        internal = {"_line", "_use_estimate"}
        for n in names:
            if n not in self.frame.columns or n in internal:
                cols = [c for c in self.frame.columns if c not in internal]
                raise InputError(f"{n!r} is not a column of the study table; columns: {', '.join(cols)}")
        return {n: [None if pd.isna(v) else v for v in self.frame[n].tolist()] for n in names}

    def describe(self) -> dict:
        rep = self.reported
        return {"outcome": self.outcome, "arms": self.arms, "k": self.k, "rule": self.rule,
                "included": self.study_ids, "k_counts": int((~rep).sum()), "k_reported": int(rep.sum()),
                "reported": [s for s, r in zip(self.study_ids, rep) if r],
                "excluded": [{"study_id": s, "reason": r} for s, r in self.excluded]}


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError("no such file", file=path)
    if path.is_dir():
        raise InputError("is a directory, not a CSV file", file=path)
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise InputError("cannot be read (permission denied)", file=path) from None
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror})", file=path) from None
    if not raw.strip():
        raise InputError("the file is empty", file=path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                         "save it as 'CSV UTF-8'", file=path) from None


def _parse_count(value: str, *, file, row, line, column):
    v = value.strip()
    if v == "":
        return pd.NA
    if not _INT_RE.match(v):
        kind = "not a number" if not re.match(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", v) else \
            "not a whole number"
        if v.lower() in ("nan", "inf", "-inf", "+inf", "infinity", "na", "null"):
            kind = "not a finite whole number"
        raise InputError(f"{kind}: {value!r} (counts must be whole numbers >= 0)", file=file,
                         row=row, line=line, column=column)
    n = int(v.split(".")[0])
    if abs(n) > MAX_COUNT:
        raise InputError(f"count {n} is larger than {MAX_COUNT:,}; is it a typo?", file=file, row=row,
                         line=line, column=column)
    return n


def _schema() -> pa.DataFrameSchema:
    count: dict[str, Any] = dict(dtype="Int64", checks=pa.Check.ge(0, error="must be >= 0"), coerce=False)
    return pa.DataFrameSchema(
        {
            "study_id": pa.Column(str, pa.Check.str_length(min_value=1, error="must not be empty")),
            "outcome": pa.Column(str, pa.Check.str_length(min_value=1, error="must not be empty")),
            "events_treat": pa.Column(nullable=True, **count),
            "total_treat": pa.Column(nullable=True, dtype="Int64",
                                     checks=pa.Check.gt(0, error="must be > 0 (an arm needs patients)")),
            "events_control": pa.Column(nullable=True, required=False, **count),
            "total_control": pa.Column(nullable=True, required=False, dtype="Int64",
                                       checks=pa.Check.gt(0, error="must be > 0 (an arm needs patients)")),
        },
        strict=False,
    )


def _first_failure(err: pa.errors.SchemaErrors, frame: pd.DataFrame, file) -> InputError:
    fc = err.failure_cases
    fc = fc.assign(_order=fc["index"].map(lambda i: i if isinstance(i, (int, np.integer)) else 10**12))
    fc = fc.sort_values("_order", kind="stable")
    r = fc.iloc[0]
    more = len(fc) - 1
    idx = r["index"]
    row = int(idx) + 1 if isinstance(idx, (int, np.integer)) else None
    col = r["column"] if isinstance(r["column"], str) else None
    check = str(r["check"])
    value = r["failure_case"]
    msg = f"{check}: got {_plain(value)!r}" if not check.startswith("not_nullable") else "must not be empty"
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    line = int(frame["_line"].iloc[row - 1]) if row is not None else None
    return InputError(msg, file=file, row=row, line=line, column=col)


def load_studies(path: str | Path = DEFAULT_DATA, description: str | Path | None = None) -> StudyTable:
    """Read and validate a study table.

    Parameters
    ----------
    path : str or Path
        A CSV in the format described in the module docstring (default ``data/studies.csv``).
    description : str or Path, optional
        Its description (:mod:`rescuemeta.description`); default: the ``.toml`` beside the CSV, if any.

    Returns
    -------
    StudyTable

    Raises
    ------
    InputError
        For any unusable input, naming file, row (with its line) and column.
    """
    path = Path(path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the file is empty", file=path) from None
    except csv.Error as e:
        raise InputError(f"not a readable CSV ({e})", file=path) from None
    header = [h.strip() for h in header]
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in header[0]:
                raise InputError(f"columns are separated by {name}; rescuemeta reads comma-separated "
                                 "files", file=path, row=None)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(f"duplicate column name(s): {', '.join(dup)}", file=path, column=dup[0])
    file_header = header
    header, original, sums = _map_header(file_header, path)
    missing = [c for c in REQUIRED if c != "outcome" and c not in header and c not in sums]
    if missing:
        hints = ", ".join(f"{c}{_near_miss(c, file_header)}" for c in missing)
        raise InputError(f"missing required column(s): {hints} (the header has: {', '.join(file_header)}; "
                         "metafor's ai/bi/ci/di, tpos/tneg/cpos/cneg and n1i/n2i are accepted too)", file=path,
                         column=missing[0])
    desc = load_description(path, description)
    try:
        return _load_rows(path, reader, header, sums, desc)
    except InputError as e:  # name the column as the file names it
        if e.column in original:
            e.column = original[e.column]
        raise


def _load_rows(path: Path, reader, header: list[str], sums: dict, desc) -> StudyTable:
    records: list[list[str]] = []
    lines = []
    try:
        for rec in reader:
            if not rec or all(not f.strip() for f in rec):
                continue
            row = len(records) + 1
            if len(rec) != len(header):
                raise InputError(f"has {len(rec)} fields but the header has {len(header)}", file=path,
                                 row=row, line=reader.line_num)
            records.append(rec)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise InputError(f"not a readable CSV row ({e})", file=path, row=len(records) + 1,
                         line=reader.line_num) from None
    if not records:
        raise InputError("the file has a header but no data rows", file=path)

    cols = {h: [r[i] for r in records] for i, h in enumerate(header)}
    cells = {cell.lower() for _, cell in sums.values()}
    data = {}
    for h, values in cols.items():
        if h in COUNT_COLUMNS or h in cells:
            parsed = [_parse_count(v, file=path, row=i + 1, line=lines[i], column=h)
                      for i, v in enumerate(values)]
            data[h] = pd.array(parsed, dtype="Int64")
        else:
            data[h] = pd.array([v.strip() if h in ("study_id", "outcome") else v for v in values],
                               dtype=object)
    for total, (events, cell) in sums.items():
        data[total] = data[events] + data[cell.lower()]
    if "outcome" not in data:  # a file with one outcome
        only = list(desc.outcomes)
        data["outcome"] = pd.array([only[0] if len(only) == 1 else path.stem] * len(records), dtype=object)
    frame = pd.DataFrame(data)
    frame["_line"] = lines
    try:
        _schema().validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        raise _first_failure(err, frame, path) from None

    has_ec = "events_control" in frame
    has_tc = "total_control" in frame
    if has_ec != has_tc:
        raise InputError("events_control and total_control go together: the file has only "
                         f"{'events_control' if has_ec else 'total_control'}", file=path,
                         column="total_control" if has_ec else "events_control")
    if not has_ec:
        frame["events_control"] = pd.array([pd.NA] * len(frame), dtype="Int64")
        frame["total_control"] = pd.array([pd.NA] * len(frame), dtype="Int64")

    _check_estimates(frame, path)
    has_est = "estimate" in frame
    for i in range(len(frame)):
        r = frame.iloc[i]
        row, line = i + 1, int(r["_line"])
        et, tt = r["events_treat"], r["total_treat"]
        if pd.isna(et) or pd.isna(tt):
            if not pd.isna(et) or not pd.isna(tt):
                which = "total_treat" if pd.isna(tt) else "events_treat"
                raise InputError("must not be empty (events_treat and total_treat go together)", file=path,
                                 row=row, line=line, column=which)
            if not has_est or _missing(r["estimate"]):
                raise InputError("must not be empty (a row needs counts or a reported estimate)", file=path,
                                 row=row, line=line, column="events_treat" if pd.isna(et) else "total_treat")
            if not pd.isna(r["events_control"]) or not pd.isna(r["total_control"]):
                raise InputError("a row with control-arm counts needs the treatment arm's too", file=path,
                                 row=row, line=line, column="events_treat")
            continue
        if r["events_treat"] > r["total_treat"]:
            raise InputError(f"events_treat ({r['events_treat']}) is larger than total_treat "
                             f"({r['total_treat']})", file=path, row=row, line=line, column="events_treat")
        ec, tc = r["events_control"], r["total_control"]
        if pd.isna(ec) != pd.isna(tc):
            which = "events_control" if pd.isna(tc) else "total_control"
            other = "total_control" if pd.isna(tc) else "events_control"
            raise InputError(f"{which} is given but {other} is empty (a single-arm row leaves both "
                             "empty)", file=path, row=row, line=line, column=other)
        if not pd.isna(ec) and ec > tc:
            raise InputError(f"events_control ({ec}) is larger than total_control ({tc})", file=path,
                             row=row, line=line, column="events_control")
    if "count_basis" in frame:
        for i, v in enumerate(frame["count_basis"]):
            if v.strip() and v.strip() not in COUNT_BASIS:
                raise InputError(f"unknown count_basis {v!r}; expected one of {', '.join(COUNT_BASIS)}",
                                 file=path, row=i + 1, line=int(frame["_line"].iloc[i]),
                                 column="count_basis")
    key = frame["study_id"] + "\x00" + frame["outcome"]
    dups = key[key.duplicated(keep=False)]
    if len(dups):
        rows = [i + 1 for i in dups.index]
        first = dups.index[0]
        raise InputError(f"duplicate (study_id, outcome) = ({frame['study_id'].iloc[first]}, "
                         f"{frame['outcome'].iloc[first]}) in rows {', '.join(map(str, rows))}",
                         file=path, row=rows[-1], line=int(frame["_line"].iloc[rows[-1] - 1]),
                         column="study_id")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return StudyTable(frame=frame, path=str(path), sha256=sha, description=desc)


def _check_estimates(frame: pd.DataFrame, path) -> None:
    """Validate (and convert in place) the reported-effect columns, ``adjusted`` and ``design``."""
    def err(msg, i, col):
        return InputError(msg, file=path, row=i + 1, line=int(frame["_line"].iloc[i]), column=col)

    present = [c for c in ESTIMATE_COLUMNS if c in frame]
    if present and len(present) < len(ESTIMATE_COLUMNS):
        missing = [c for c in ESTIMATE_COLUMNS if c not in frame]
        raise InputError(f"a reported estimate needs the columns {', '.join(ESTIMATE_COLUMNS)}; missing "
                         f"{', '.join(missing)}", file=path, column=missing[0])
    if present:
        nums: dict[str, list] = {"estimate": [], "ci_low": [], "ci_high": []}
        measures: list[str | None] = []
        for i in range(len(frame)):
            cells = {c: str(frame[c].iloc[i]).strip() for c in ESTIMATE_COLUMNS}
            filled = [c for c in ESTIMATE_COLUMNS if cells[c]]
            if filled and len(filled) < len(ESTIMATE_COLUMNS):
                empty = [c for c in ESTIMATE_COLUMNS if not cells[c]]
                raise err(f"must not be empty when {', '.join(filled)} {'is' if len(filled) == 1 else 'are'} given "
                          "(a reported estimate needs measure, estimate, ci_low and ci_high)", i, empty[0])
            if not filled:
                measures.append(None)
                for c in nums:
                    nums[c].append(np.nan)
                continue
            m = cells["measure"].upper()
            if m not in ESTIMATE_MEASURES:
                raise err(f"unknown measure {cells['measure']!r}; expected {' or '.join(ESTIMATE_MEASURES)} (a ratio "
                          "with its 95% CI, on the natural scale)", i, "measure")
            measures.append(m)
            for c in nums:
                try:
                    v = float(cells[c])
                except ValueError:
                    raise err(f"not a number: {cells[c]!r}", i, c) from None
                if not (math.isfinite(v) and v > 0):
                    raise err(f"must be a finite ratio > 0, got {cells[c]!r}", i, c)
                nums[c].append(v)
            lo, est, hi = nums["ci_low"][-1], nums["estimate"][-1], nums["ci_high"][-1]
            if not lo < hi:
                raise err(f"ci_low ({lo:g}) must be below ci_high ({hi:g})", i, "ci_low")
            if not lo <= est <= hi:
                raise err(f"estimate {est:g} lies outside its CI ({lo:g} to {hi:g})", i, "estimate")
        frame["measure"] = pd.array(measures, dtype=object)
        for c, column_values in nums.items():
            frame[c] = np.asarray(column_values, dtype=float)
    if "adjusted" in frame:
        vals: list = []
        for i, v in enumerate(frame["adjusted"]):
            t = str(v).strip().lower()
            if t in _TRUE or t in _FALSE:
                vals.append(t in _TRUE)
            elif t in ("", "nan", "<na>", "none"):
                vals.append(None)
            else:
                raise err(f"adjusted must be true or false, got {v!r}", i, "adjusted")
        frame["adjusted"] = pd.array(vals, dtype=object)
    if "design" in frame:
        for i, v in enumerate(frame["design"]):
            t = str(v).strip().lower()
            if t and t not in ("nan", "<na>", "none") and t not in DESIGNS:
                raise err(f"unknown design {v!r}; expected one of {', '.join(DESIGNS)} (rct: randomised; "
                          "observational or comparative: non-randomised)", i, "design")


def parse_exclude_basis(spec: str | None) -> tuple[str, ...]:
    """Parse ``--exclude-basis approximate,denominator_fitted``."""
    if not spec:
        return ()
    vals = tuple(v.strip() for v in spec.split(",") if v.strip())
    bad = [v for v in vals if v not in COUNT_BASIS]
    if bad:
        raise InputError(f"--exclude-basis: unknown count_basis {', '.join(bad)}; choose from "
                         f"{', '.join(COUNT_BASIS)}")
    return vals


def select(table: StudyTable, outcome: str, *, arms: str = "two", all_studies: bool = False,
           exclude_basis: tuple[str, ...] = (), effects: str = "reported", measure: str | None = None) -> Selection:
    """Choose the rows one analysis of ``outcome`` uses.

    Rules, in order:

    1. rows whose ``count_basis`` is in ``exclude_basis`` are dropped;
    2. unless ``all_studies``, one row per ``overlap_group`` (cohorts that may share patients; an empty
       group is a group of its own): a row with both arms before a single-arm row, then the larger total
       (treatment + control), then ``study_id``;
    3. ``arms="two"`` keeps rows with both arms, and, with ``effects="reported"`` and a ``measure``, rows whose
       reported estimate is on that scale (a row with both uses its estimate: for a non-randomised study the
       reported effect is typically confounding-adjusted, the counts crude); ``effects="counts"`` uses counts
       only (``--counts-only``); ``arms="one"`` uses the treatment arm of every row with counts.

    The included rows keep the file's order (as metafor does).

    Returns
    -------
    Selection
        Raises InputError when the outcome is unknown or no row is usable.
    """
    f = table.frame
    if outcome not in set(f["outcome"]):
        raise InputError(f"unknown outcome {outcome!r}; the file has: {', '.join(table.outcomes)}",
                         file=table.path, column="outcome")
    if arms not in ("two", "one"):
        raise ValueError(f"arms must be 'two' or 'one', not {arms!r}")
    # The rules are decided on plain Python values (a few dozen rows), and the frame is indexed once at the
    # end: pandas operations on such small frames cost far more than the decisions (28 ms -> 3 ms a call).
    f = f[f["outcome"] == outcome]
    sid = [str(x) for x in f["study_id"]]
    if effects not in ("reported", "counts"):
        raise ValueError(f"effects must be 'reported' or 'counts', not {effects!r}")
    two = [not _missing(x) for x in f["total_control"]]
    counted = [not _missing(x) for x in f["total_treat"]]
    est_measure = [None if ("measure" not in f or _missing(m)) else m for m in
                   (f["measure"] if "measure" in f else [None] * len(two))]
    use_est = [arms == "two" and effects == "reported" and m is not None and m == measure for m in est_measure]
    comparative = [t or m is not None for t, m in zip(two, est_measure)]
    total = [(0 if _missing(t) else int(t)) + (0 if _missing(c) else int(c))
             for t, c in zip(f["total_treat"], f["total_control"])]
    basis = list(f["count_basis"]) if "count_basis" in f else [None] * len(sid)
    keep = list(range(len(sid)))
    excluded: list[tuple[str, str]] = []
    rule_parts = []
    if exclude_basis:
        excluded += [(sid[i], f"count_basis {basis[i]}") for i in keep if basis[i] in exclude_basis]
        keep = [i for i in keep if basis[i] not in exclude_basis]
        rule_parts.append(f"excluding count_basis {', '.join(exclude_basis)}")
    if not all_studies and "overlap_group" in f:
        groups = ["" if _missing(g) else str(g).strip() for g in f["overlap_group"]]
        group = {i: groups[i] or "\x00" + sid[i] for i in keep}  # an empty group is a group of its own
        chosen: dict[str, int] = {}
        usable = [(t or u) if arms == "two" else c for t, u, c in zip(two, use_est, counted)]
        for i in sorted(keep, key=lambda i: (group[i], not usable[i], not comparative[i], -total[i], sid[i])):
            if group[i] in chosen:
                excluded.append((sid[i], f"overlap_group {group[i]}: {sid[chosen[group[i]]]} kept"))
            else:
                chosen[group[i]] = i
        keep = [i for i in keep if chosen[group[i]] == i]
        rule_parts.insert(0, "one study per overlap_group (usable in this analysis, then two-arm before single-arm, "
                          "then larger total)")
    else:
        rule_parts.insert(0, "all studies (overlap groups not deduplicated)")
    if arms == "two":
        def why(i):
            if est_measure[i] is None:
                return "no control arm"
            if effects == "counts":
                return "reported estimate only (counts-only analysis)"
            return f"reports an {est_measure[i]}, not an {measure}" if measure else "reported estimate only"
        excluded += [(sid[i], why(i)) for i in keep if not (two[i] or use_est[i])]
        keep = [i for i in keep if two[i] or use_est[i]]
        n_rep = sum(use_est[i] for i in keep)
        rule_parts.append("comparative rows only" + (f" ({n_rep} by their reported {measure})" if n_rep else "")
                          + ("; counts only" if effects == "counts" and any(m is not None for m in est_measure)
                             else ""))
    else:
        excluded += [(sid[i], "reported estimate only (no treatment-arm counts)") for i in keep if not counted[i]]
        keep = [i for i in keep if counted[i]]
        rule_parts.append("treatment arm of every row")
    if not keep:
        need = "rows with both events_control and total_control" if arms == "two" else "rows"
        raise InputError(f"outcome {outcome!r} has no usable rows for this analysis (it needs {need}; "
                         f"inclusion rule: {'; '.join(rule_parts)})", file=table.path)
    order = sorted(keep, key=lambda i: int(f["_line"].iat[i]))
    f = f.iloc[order].assign(_use_estimate=[bool(use_est[i]) for i in order])
    return Selection(frame=f.reset_index(drop=True), outcome=outcome, arms=arms, rule="; ".join(rule_parts),
                     excluded=sorted(excluded))


def _missing(x) -> bool:
    """A missing cell as pandas reads it (None, NaN or pd.NA)."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))
