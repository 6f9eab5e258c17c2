"""Reference profiles from a pandas DataFrame or a pyarrow Table.

`build_profile` gives the same profile as ``mlwatch-profile build`` on the
same values, to the last bit of every float and byte for byte once written
with `Profile.to_json` (the CLI's file). The arithmetic follows
``analyzer/drift/src/profile.rs`` operation by operation:

- values are sorted in IEEE total order (``-0.0`` before ``0.0``);
- sums are sequential, left to right over the sorted values (``numpy.cumsum``,
  never ``numpy.sum``, whose pairwise summation rounds differently);
- quantiles are numpy's default linear interpolation written out as the Rust
  code writes it;
- floats are written as Rust's ``serde_json`` writes them, numbers that
  become category names as Rust's ``Display`` writes them.

pandas and numpy are needed for DataFrames, pyarrow for Tables (the
``mlwatch[pandas]`` / ``mlwatch[arrow]`` extras); nothing else.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections import Counter
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

FORMAT = "mlwatch.profile.v1"
_OUTPUTS = ("score", "label", "value")


class ProfileError(ValueError):
    """Bad input to `build_profile`: names the column (and row) at fault."""


class Profile(dict):  # type: ignore[type-arg]
    """A reference profile: a dict in the order of the profile JSON."""

    def to_json(self) -> str:
        """Pretty JSON, byte for byte what ``mlwatch-profile build`` writes."""
        out: List[str] = []
        _write(self, 0, out)
        return "".join(out)

    def to_compact_json(self) -> str:
        """Compact JSON (what the analyzer stores on the profiles topic)."""
        out: List[str] = []
        _write(self, None, out)
        return "".join(out)

    @property
    def model(self) -> str:
        return str(self["model"])


# --- number formatting --------------------------------------------------


def _digits(x: float) -> Tuple[str, int]:
    """Shortest round-trip digits of |x| > 0 and the exponent: x = d * 10^k."""
    t = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, t.digits))
    stripped = digits.rstrip("0")
    exponent = int(t.exponent) + (len(digits) - len(stripped))
    return stripped, exponent


def format_float(x: float) -> str:
    """A finite float as Rust's serde_json writes it (the zmij crate): the
    shortest round-trip digits, positional when the decimal exponent is in
    -5..=15 (integers with ``.0``), else ``d.ddde+N`` / ``de-N``."""
    if not math.isfinite(x):
        raise ValueError(f"{x} cannot be written as JSON")
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0.0:
        return sign + "0.0"
    d, k = _digits(x)
    length = len(d)
    dec_exp = length + k - 1  # x = d.ddd * 10^dec_exp
    if -5 <= dec_exp <= 15:
        if k >= 0:
            body = d + "0" * k + ".0"
        elif dec_exp >= 0:
            body = d[: dec_exp + 1] + "." + d[dec_exp + 1 :]
        else:
            body = "0." + "0" * (-dec_exp - 1) + d
    else:
        mantissa = d[0] + ("." + d[1:] if length > 1 else "")
        body = mantissa + "e" + ("+" if dec_exp >= 0 else "-") + str(abs(dec_exp))
    return sign + body


def format_number(x: float) -> str:
    """How a number becomes a category name (Rust ``format_number``)."""
    if x == math.floor(x) and abs(x) < 1e15:
        return str(int(x))
    d, k = _digits(x)
    sign = "-" if x < 0 else ""
    if k >= 0:
        return sign + d + "0" * k
    point = len(d) + k
    if point > 0:
        return sign + d[:point] + "." + d[point:]
    return sign + "0." + "0" * (-point) + d


def _write(v: Any, indent: Optional[int], out: List[str]) -> None:
    if isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(format_float(v))
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False))
    elif v is None:
        out.append("null")
    elif isinstance(v, dict):
        if not v:
            out.append("{}")
            return
        out.append("{")
        inner = None if indent is None else indent + 1
        for i, (k, item) in enumerate(v.items()):
            if i:
                out.append(",")
            if inner is not None:
                out.append("\n" + "  " * inner)
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(": " if inner is not None else ":")
            _write(item, inner, out)
        if indent is not None:
            out.append("\n" + "  " * indent)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        if not v:
            out.append("[]")
            return
        out.append("[")
        inner = None if indent is None else indent + 1
        for i, item in enumerate(v):
            if i:
                out.append(",")
            if inner is not None:
                out.append("\n" + "  " * inner)
            _write(item, inner, out)
        if indent is not None:
            out.append("\n" + "  " * indent)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(v).__name__} as profile JSON")


# --- columns ------------------------------------------------------------


class _Column:
    __slots__ = ("numbers", "texts")

    def __init__(self) -> None:
        self.numbers: List[Any] = []  # numpy float64 arrays
        self.texts: Counter[str] = Counter()


def _add_objects(col: _Column, name: str, values: Iterable[Any], np: Any) -> None:
    """Adds Python values one by one (object, string, category columns)."""
    numbers: List[float] = []
    for row, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            col.texts["true" if v else "false"] += 1
        elif isinstance(v, (int, np.integer)):
            numbers.append(float(v))
        elif isinstance(v, (float, np.floating)):
            numbers.append(float(v))  # NaN and inf are dropped below
        elif isinstance(v, str):
            col.texts[v] += 1
        elif _is_na(v):
            continue
        else:
            raise ProfileError(
                f"column {name!r}: row {row}: {type(v).__name__} values are not feature values "
                "(exclude the column)"
            )
    if numbers:
        col.numbers.append(np.asarray(numbers, dtype=np.float64))


def _is_na(v: Any) -> bool:
    try:
        import pandas as pd  # noqa: PLC0415

        return v is pd.NA or v is pd.NaT
    except ImportError:  # pragma: no cover
        return False


def _columns_of(data: Any, np: Any) -> Tuple[int, List[Tuple[str, Any]]]:
    """(rows, [(name, feeder)]) where feeder(col) adds the column's values."""
    try:
        import pyarrow as pa  # noqa: PLC0415
    except ImportError:
        pa = None
    if pa is not None and isinstance(data, (pa.Table, pa.RecordBatch)):
        return _arrow_columns(data, np, pa)
    try:
        import pandas as pd  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover
        raise TypeError("build_profile takes a pandas DataFrame (pip install 'mlwatch[pandas]') "
                        "or a pyarrow Table (pip install 'mlwatch[arrow]')") from e
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"build_profile takes a pandas DataFrame or a pyarrow Table, not {type(data).__name__}")
    out: List[Tuple[str, Any]] = []
    for name in data.columns:
        series = data[name]
        if isinstance(series, pd.DataFrame):
            raise ProfileError(f"column {str(name)!r} appears twice")
        out.append((str(name), _pandas_feeder(str(name), series, np, pd)))
    return len(data), out


def _pandas_feeder(name: str, s: Any, np: Any, pd: Any) -> Any:
    dtype = s.dtype
    kind = getattr(dtype, "kind", "O")
    if kind in "fiu" and not isinstance(dtype, pd.CategoricalDtype):
        def feed(col: _Column) -> None:
            col.numbers.append(s.to_numpy(dtype=np.float64, na_value=np.nan))
        return feed
    if kind in "mM":
        raise ProfileError(f"column {name!r}: {dtype} values are not feature values (exclude the column)")
    if kind == "b" and not isinstance(dtype, pd.BooleanDtype):
        def feed_bool(col: _Column) -> None:
            values = s.to_numpy()
            trues = int(np.count_nonzero(values))
            if trues:
                col.texts["true"] += trues
            if len(values) - trues:
                col.texts["false"] += len(values) - trues
        return feed_bool

    def feed_objects(col: _Column) -> None:
        _add_objects(col, name, s.astype(object).tolist(), np)
    return feed_objects


def _arrow_columns(table: Any, np: Any, pa: Any) -> Tuple[int, List[Tuple[str, Any]]]:
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.types as t  # noqa: PLC0415

    names = list(table.schema.names)
    seen = set()
    out: List[Tuple[str, Any]] = []
    for i, name in enumerate(names):
        if name in seen:
            raise ProfileError(f"column {name!r} appears twice")
        seen.add(name)
        if name.startswith("__index_level_"):
            continue  # pandas' index, as mlwatch-profile skips it
        column = table.column(i)
        typ = column.type
        if t.is_dictionary(typ):
            column = column.cast(typ.value_type) if hasattr(column, "cast") else pc.cast(column, typ.value_type)
            typ = typ.value_type
        if t.is_integer(typ) or t.is_floating(typ):
            def feed(col: _Column, c: Any = column) -> None:
                col.numbers.append(
                    pc.cast(c, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
                )
            out.append((name, feed))
        elif t.is_string(typ) or t.is_large_string(typ) or t.is_boolean(typ) or t.is_null(typ):
            def feed_objects(col: _Column, c: Any = column, n: str = name) -> None:
                _add_objects(col, n, c.to_pylist(), np)
            out.append((name, feed_objects))
        else:
            raise ProfileError(f"column {name!r}: {typ} values are not feature values (exclude the column)")
    return table.num_rows, out


# --- summaries ----------------------------------------------------------


def _seq_sum(xs: Any, np: Any) -> float:
    """Left-to-right sum, as Rust's ``Iterator::sum`` (folds from -0.0)."""
    if len(xs) == 0:
        return -0.0
    return float(np.cumsum(xs)[-1])


def _quantiles(xs: Any, bins: int, np: Any) -> List[float]:
    n = len(xs)
    q = np.arange(1, bins, dtype=np.float64) / np.float64(bins)
    h = np.float64(n - 1) * q
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    a, b = xs[lo], xs[hi]
    tt = h - lo.astype(np.float64)
    diff = b - a
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.where(tt >= 0.5, b - diff * (1.0 - tt), a + diff * tt)
    out: List[float] = []
    for v in e.tolist():
        if not out or out[-1] != v:
            out.append(v)
    return out


def _numeric(xs: Any, rows: int, fine: int, coarse: int, np: Any) -> Dict[str, Any]:
    xs = np.sort(xs, kind="stable")
    # Total order: -0.0 before 0.0 (numpy's sort treats them as equal).
    zeros = np.flatnonzero(xs == 0.0)
    if len(zeros):
        negative = int(np.count_nonzero(np.signbit(xs[zeros])))
        xs[zeros[:negative]] = -0.0
        xs[zeros[negative:]] = 0.0
    n = len(xs)
    mean = _seq_sum(xs, np) / float(n)
    dev = xs - mean
    var = _seq_sum(dev * dev, np) / float(n)
    edges = _quantiles(xs, fine, np)
    coarse_edges = _quantiles(xs, coarse, np)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), xs, side="right")
    bounds = np.searchsorted(bins, np.arange(len(edges) + 2), side="left")
    counts: List[int] = []
    bin_means: List[float] = []
    for i in range(len(edges) + 1):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        c = hi - lo
        counts.append(c)
        # Rust adds into a bin starting from +0.0.
        s = 0.0 + float(np.cumsum(xs[lo:hi])[-1]) if c else 0.0
        bin_means.append(s / float(c) if c else 0.0)
    means = np.asarray(bin_means, dtype=np.float64)
    binning_error = _seq_sum(np.abs(xs - means[bins]), np) / float(n)
    return {
        "type": "numeric",
        "count": n,
        "missing": max(rows - n, 0),
        "mean": mean,
        "std": math.sqrt(var),
        "min": float(xs[0]),
        "max": float(xs[n - 1]),
        "edges": edges,
        "coarse_edges": coarse_edges,
        "counts": counts,
        "bin_means": bin_means,
        "binning_error": binning_error,
    }


def _summarise(col: _Column, rows: int, forced: bool, fine: int, coarse: int, max_categories: int,
               np: Any) -> Dict[str, Any]:
    xs = np.concatenate(col.numbers) if col.numbers else np.zeros(0, dtype=np.float64)
    xs = xs[np.isfinite(xs)]
    if forced or col.texts or len(xs) == 0:
        texts = Counter(col.texts)
        for x in xs.tolist():
            texts[format_number(x)] += 1
        count = sum(texts.values())
        # Rust compares strings by UTF-8 bytes: the same order as code points.
        ranked = sorted(texts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = ranked[:max_categories]
        other = sum(c for _, c in ranked[max_categories:])
        return {
            "type": "categorical",
            "count": count,
            "missing": max(rows - count, 0),
            "categories": dict(sorted(kept)),
            "other": other,
        }
    return _numeric(xs, rows, fine, coarse, np)


def build_profile(
    data: Any,
    *,
    model: str,
    version: int,
    prediction_columns: Optional[Mapping[str, str]] = None,
    exclude: Iterable[str] = (),
    categorical: Iterable[str] = (),
    source: str = "dataframe",
    created_at_ms: Optional[int] = None,
    fine_bins: int = 100,
    coarse_bins: int = 10,
    max_categories: int = 200,
) -> Profile:
    """Summarises a DataFrame (or pyarrow Table / RecordBatch) into a reference profile.

    ``prediction_columns`` maps a column to the prediction output it holds
    (``{"proba": "score"}``; outputs ``score``, ``label``, ``value``), as
    ``--prediction-column proba=score``; ``exclude`` and ``categorical`` are
    ``--exclude`` and ``--categorical``. Numbers (integer and float columns,
    numbers in object columns) are numeric values, strings and booleans
    categories; None, NaN, ``pd.NA`` and infinities are missing. Datetime,
    binary, nested and other values raise `ProfileError` naming the column.
    """
    import numpy as np  # noqa: PLC0415

    if not model:
        raise ProfileError("model: is empty")
    if not (isinstance(version, int) and 0 <= version < 2**32):
        raise ProfileError(f"version: expected an integer in [0, 2^32), found {version!r}")
    if coarse_bins < 2 or fine_bins < coarse_bins or fine_bins % coarse_bins:
        raise ProfileError(f"fine_bins {fine_bins} must be a multiple of coarse_bins {coarse_bins} (at least 2)")
    predictions_of = dict(prediction_columns or {})
    for column, output in predictions_of.items():
        if output not in _OUTPUTS:
            raise ProfileError(f"prediction column {column!r}: output must be score, label or value, not {output!r}")
    excluded = set(exclude)
    forced = set(categorical)
    rows, columns = _columns_of(data, np)
    if rows == 0:
        raise ProfileError("no rows to profile")
    features: Dict[str, _Column] = {}
    predictions: Dict[str, _Column] = {}
    for name, feed in columns:
        if name in excluded:
            continue
        if name in predictions_of:
            feed(predictions.setdefault(predictions_of[name], _Column()))
        else:
            feed(features.setdefault(name, _Column()))

    def summarise(cols: Dict[str, _Column]) -> Dict[str, Any]:
        return {
            name: _summarise(cols[name], rows, name in forced, fine_bins, coarse_bins, max_categories, np)
            for name in sorted(cols)
        }

    return Profile(
        format=FORMAT,
        model=model,
        version=version,
        created_at_ms=int(time.time() * 1000) if created_at_ms is None else int(created_at_ms),
        source=source,
        rows=rows,
        features=summarise(features),
        predictions=summarise(predictions),
    )


class ProfileUploadError(RuntimeError):
    """The analyzer refused a profile: `status` and its answer."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"profile upload answered {status}: {body}")
        self.status = status
        self.body = body


def upload_profile(
    url: str,
    profile: Mapping[str, Any],
    *,
    model_version: Optional[str] = None,
    token: Optional[str] = None,
    timeout: float = 30.0,
) -> Dict[str, Any]:
    """Uploads a profile to an analyzer (``PUT /v1/models/{model}/profile``).

    The analyzer validates it, gives it a free version, publishes it on the
    profiles topic and answers once the broker has it:
    ``{"model", "version", "model_version", "active": true}``. With
    ``model_version`` the profile becomes the reference of that model
    version only. Raises `ProfileUploadError` on any other answer.
    """
    from ._http import request  # noqa: PLC0415

    body = profile.to_compact_json() if isinstance(profile, Profile) else Profile(profile).to_compact_json()
    path = "/v1/models/" + urllib.parse.quote(str(profile["model"]), safe="") + "/profile"
    if model_version is not None:
        path += "?model_version=" + urllib.parse.quote(model_version, safe="")
    status, _, answer = request("PUT", url, path, body.encode(), token=token, timeout=timeout)
    if status not in (200, 201):
        raise ProfileUploadError(status, answer.decode("utf-8", "replace"))
    result: Dict[str, Any] = json.loads(answer)
    return result
