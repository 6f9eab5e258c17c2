"""`build_profile` against the `mlwatch-profile` CLI: the same bytes.

The CLI is the reference: each test builds a profile from a file with it
and from the same values with `build_profile`, and compares the JSON byte
for byte (so every float to the last bit). `created_at_ms` (the CLI's
clock) and `source` (its input path) are taken over from the CLI's output.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlwatch
from mlwatch.profile import format_float, format_number
from support import REPO, binary

FIXTURES = REPO / "analyzer/drift/tests/fixtures/parquet"
CLI_MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]


def cli_profile(path: Path, *args: str) -> str:
    out = subprocess.run(
        [str(binary("mlwatch-profile")), "build", "--input", str(path), "--model", "fraud", "--version", "3", *args],
        check=True, capture_output=True, text=True,
    )
    return out.stdout


def assert_same(cli: str, data: Any, path: Path, **kwargs: Any) -> None:
    created = json.loads(cli)["created_at_ms"]
    ours = mlwatch.build_profile(
        data, model="fraud", version=3, source=str(path), created_at_ms=created, **kwargs
    ).to_json()
    if ours != cli:
        for i, (a, b) in enumerate(zip(ours.splitlines(), cli.splitlines())):
            assert a == b, f"line {i + 1} differs (ours, then the CLI's)"
        assert ours == cli


@pytest.mark.parametrize("name", ["train.csv", "train.snappy.parquet", "train.zstd.parquet", "train.lz4.parquet"])
def test_fixture_profiles_equal_the_cli_byte_for_byte(name: str) -> None:
    path = FIXTURES / name
    cli = cli_profile(path, "--exclude", "id", "--prediction-column", "proba=score")
    kwargs: Dict[str, Any] = {"exclude": ["id"], "prediction_columns": {"proba": "score"}}
    if name.endswith(".csv"):
        df = pd.read_csv(path, keep_default_na=False, na_values=CLI_MISSING)
        assert_same(cli, df, path, **kwargs)
    else:
        assert_same(cli, pd.read_parquet(path), path, **kwargs)
        assert_same(cli, pq.read_table(path), path, **kwargs)


def stress_frame(seed: int) -> pd.DataFrame:
    """Values that exercise every formatting and rounding path."""
    rng = np.random.default_rng(seed)
    n = 3000
    wide = rng.lognormal(0.0, 12.0, n) * rng.choice([-1.0, 1.0], n)  # 1e-20 .. 1e20
    wide[rng.random(n) < 0.05] = np.nan
    zeros = rng.choice([-0.0, 0.0, 1.0, -2.5], n)
    ties = rng.integers(0, 5, n).astype(np.float64)
    tiny = rng.normal(1e-6, 1e-7, n)
    big_int = rng.integers(2**53, 2**62, n, dtype=np.int64)
    cats = [f"c{int(k)}" for k in rng.zipf(1.3, n) % 400]
    odd = ["Ünï", 'quo"te', "a,b", "tab\there", "ctl\x01x", "日本"]
    for i in rng.choice(n, 60, replace=False):
        cats[i] = odd[i % len(odd)]
    mixed: List[Any] = [
        [1.0, 0.1, 1e-7, 1e16, 123456789012345.6, -3.0, "x", None][k] for k in rng.integers(0, 8, n)
    ]
    flag = pd.array(rng.random(n) < 0.3, dtype="boolean")
    flag[rng.random(n) < 0.1] = pd.NA
    single = np.full(n, np.nan)
    single[7] = 42.125
    return pd.DataFrame({
        "wide": wide, "zeros": zeros, "neg_zero": np.full(n, -0.0), "ties": ties, "tiny": tiny,
        "big_int": big_int, "cats": cats, "mixed": pd.Series(mixed, dtype=object), "flag": flag,
        "single": single, "empty": np.full(n, np.nan), "zip": rng.integers(10000, 10050, n),
        "proba": rng.random(n),
    })


def write_cli_csv(df: pd.DataFrame, path: Path) -> None:
    """The frame as CSV the CLI reads back to the same values (shortest
    round-trip floats, lowercase booleans, empty cells for missing)."""
    def cell(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (float, np.floating)):
            return repr(float(v))
        return str(v)

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(df.columns)
        for row in df.astype(object).itertuples(index=False):
            w.writerow([cell(v) for v in row])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stress_values_equal_the_cli_byte_for_byte(tmp_path: Path, seed: int) -> None:
    df = stress_frame(seed)
    path = tmp_path / f"stress{seed}.csv"
    write_cli_csv(df, path)
    cli = cli_profile(path, "--prediction-column", "proba=score", "--categorical", "zip", "--max-categories", "50")
    kwargs: Dict[str, Any] = {"prediction_columns": {"proba": "score"}, "categorical": ["zip"], "max_categories": 50}
    assert_same(cli, df, path, **kwargs)
    cli_small = cli_profile(path, "--fine-bins", "20", "--coarse-bins", "5")
    assert_same(cli_small, df, path, fine_bins=20, coarse_bins=5)


@pytest.mark.parametrize("x, text", [
    (0.0, "0.0"), (-0.0, "-0.0"), (1.0, "1.0"), (0.1, "0.1"), (1e-5, "0.00001"), (1e-6, "1e-6"),
    (1e-7, "1e-7"), (1e15, "1000000000000000.0"), (1e16, "1e+16"), (1.5e300, "1.5e+300"),
    (123456789012345680.0, "1.2345678901234568e+17"), (-2.5e-10, "-2.5e-10"), (5e-324, "5e-324"),
    (0.000123, "0.000123"), (12.5, "12.5"),
])
def test_floats_are_written_as_serde_json_writes_them(x: float, text: str, tmp_path: Path) -> None:
    assert format_float(x) == text
    # and the CLI agrees: a column holding only x has min = max = x
    df = pd.DataFrame({"x": [x, x]})
    path = tmp_path / "one.csv"
    write_cli_csv(df, path)
    cli = cli_profile(path)
    assert f'"min": {text},' in cli
    assert_same(cli, df, path)


@pytest.mark.parametrize("x, text", [
    (1.0, "1"), (-0.0, "0"), (0.1, "0.1"), (1e-7, "0.0000001"), (1e16, "10000000000000000"),
    (123456789012345.6, "123456789012345.6"), (1e15, "1000000000000000"),
])
def test_numbers_become_category_names_as_rust_displays_them(x: float, text: str) -> None:
    assert format_number(x) == text


def test_bad_input_names_the_column() -> None:
    df = pd.DataFrame({"ok": [1.0, 2.0], "when": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    with pytest.raises(mlwatch.ProfileError, match="'when'"):
        mlwatch.build_profile(df, model="m", version=1)
    nested = pd.DataFrame({"ok": [1.0, 2.0], "deep": [{"a": 1}, None]})
    with pytest.raises(mlwatch.ProfileError, match=r"column 'deep': row 0: dict"):
        mlwatch.build_profile(nested, model="m", version=1)
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(mlwatch.ProfileError, match="'a' appears twice"):
        mlwatch.build_profile(dup, model="m", version=1)
    with pytest.raises(mlwatch.ProfileError, match="multiple of coarse_bins"):
        mlwatch.build_profile(df[["ok"]], model="m", version=1, fine_bins=15, coarse_bins=10)
    with pytest.raises(mlwatch.ProfileError, match="no rows"):
        mlwatch.build_profile(df[["ok"]].iloc[:0], model="m", version=1)
    with pytest.raises(mlwatch.ProfileError, match="output must be score, label or value"):
        mlwatch.build_profile(df[["ok"]], model="m", version=1, prediction_columns={"ok": "proba"})
    binary_table = pa.table({"blob": pa.array([b"x"], pa.binary())})
    with pytest.raises(mlwatch.ProfileError, match="'blob'"):
        mlwatch.build_profile(binary_table, model="m", version=1)
    with pytest.raises(TypeError, match="DataFrame"):
        mlwatch.build_profile([{"a": 1}], model="m", version=1)
