"""`upload_profile` to the real analyzer: stored, served back, refused with the reason."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

import mlwatch
from support import REPO, Analyzer

PORT_ANALYZER = 21576


def test_a_dataframe_profile_is_uploaded_and_served_back(tmp_path: Path) -> None:
    df = pd.read_parquet(REPO / "analyzer/drift/tests/fixtures/parquet/train.snappy.parquet")
    profile = mlwatch.build_profile(df, model="fraud", version=3, exclude=["id"],
                                    prediction_columns={"proba": "score"})
    a = Analyzer(tmp_path, PORT_ANALYZER, "upload").start()
    try:
        assert mlwatch.upload_profile(a.url, profile) == {
            "model": "fraud", "version": 3, "model_version": None, "active": True
        }
        with urllib.request.urlopen(f"{a.url}/v1/models/fraud/profile", timeout=10) as r:
            served = json.loads(r.read())
        assert served == json.loads(profile.to_json())
        answer = mlwatch.upload_profile(a.url, profile, model_version="v4")
        assert (answer["model_version"], answer["version"]) == ("v4", 4)  # version 3 is taken

        broken = json.loads(profile.to_json())
        broken["features"]["amount"]["counts"].append(1)
        with pytest.raises(mlwatch.ProfileUploadError) as info:
            mlwatch.upload_profile(a.url, broken)
        assert info.value.status == 400 and "amount" in info.value.body, info.value.body
    finally:
        a.stop()
