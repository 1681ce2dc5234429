"""`defectlens evaluate anomaly --product CODE` on the demo installation's built model."""

from __future__ import annotations

import re

import pytest

from app import cli
from tests.inspection.anomaly.conftest import AnomalyEnv


def test_evaluate_prints_aurocs_f1_and_confusion(
    anomaly_env: AnomalyEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: anomaly_env.settings)
    assert cli.main(["evaluate", "anomaly", "--product", "metal_plate"]) == 0
    out = capsys.readouterr().out
    counts = re.search(r"images: (\d+) normal .*?, (\d+) defect, (\d+) with masks", out)
    assert counts is not None, out
    n_normal, n_defect, n_masks = map(int, counts.groups())
    assert n_normal == 2  # the demo's held-out normals, never in the bank
    assert n_defect >= 4  # registered + held-out defects
    assert n_masks == n_defect  # all with demo masks
    image_auroc = float(re.search(r"image AUROC\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    pixel_auroc = float(re.search(r"pixel AUROC\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert 0.0 <= image_auroc <= 1.0
    assert 0.5 < pixel_auroc <= 1.0
    cells = {k: int(v) for k, v in re.findall(r"\b(tp|fn|fp|tn)\s+(\d+)", out)}
    assert cells["tp"] + cells["fn"] == n_defect
    assert cells["fp"] + cells["tn"] == n_normal
    assert "at build time" in out


def test_evaluate_explains_unknown_or_unbuilt_products(
    anomaly_env: AnomalyEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: anomaly_env.settings)
    assert cli.main(["evaluate", "anomaly", "--product", "no_such_product"]) == 1
    assert cli.main(["evaluate", "anomaly", "--product", "fabric"]) == 1
    err = capsys.readouterr().err
    assert "anomaly_model" in err
