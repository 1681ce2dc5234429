"""The PDF report on the production backends: rows in MariaDB, photo and overlay in the SeaweedFS S3 store."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from app.core.config import Settings
from app.inspection import service as inspection_service
from app.ml import anomaly_viz
from tests.factories import make_catalog, make_inspection, mariadb_s3_settings

pytestmark = [pytest.mark.mariadb, pytest.mark.s3]


@pytest.fixture
def settings(tmp_path: Path, s3_server: dict[str, str]) -> Iterator[Settings]:
    """Settings on a fresh MariaDB database and an S3 bucket (overrides the embedded defaults here)."""
    yield from mariadb_s3_settings(tmp_path, s3_server, bucket_prefix="report")


def _text(response_content: bytes) -> tuple[PdfReader, str]:
    reader = PdfReader(io.BytesIO(response_content))
    return reader, re.sub(r"\s+", "", "".join(p.extract_text() for p in reader.pages))


def test_report_reads_rows_from_mariadb_and_pictures_from_s3(
    client: TestClient, settings: Settings, worker_headers: dict[str, str]
) -> None:
    app = client.app
    storage = app.state.storage  # type: ignore[attr-defined]
    with app.state.session_factory() as session:  # type: ignore[attr-defined]
        catalog = make_catalog(session)
        row = make_inspection(
            session,
            storage,
            settings,
            product_id=catalog.products["metal_plate"],
            defect_type_id=catalog.defects["dent"],
            anomaly=True,
            generator="extractive",
            score=5,
            action="찍힘 부위 표시 후 폐기",
        )
        # the overlay as the anomaly step draws it: tinted area and region box over the photo
        photo = inspection_service.load_rgb(storage, row)
        amap = np.zeros((photo.height, photo.width), dtype=np.float32)
        amap[20:40, 10:30] = 3.0
        found = anomaly_viz.regions(amap, 1.0)
        overlay = anomaly_viz.draw_regions(anomaly_viz.overlay(photo, amap, 1.0), found)
        storage.put(inspection_service.file_key(row, "overlay.png"), anomaly_viz.to_png(overlay), "image/png")
        row.anomaly_result = {
            **(row.anomaly_result or {}),
            "regions": [r.to_dict() for r in found],
        }
        row.guidance = {
            "sections": {
                "status": "금속 판에서 찍힘 불량이 확인되었습니다.",
                "cause": "적재 중 판끼리 부딪혀 찍힘이 생깁니다.",
                "action": "해당 판을 격리하고 폐기합니다.",
                "prevention": "적재대에 완충재를 씁니다.",
            },
            "citations": [{"manual_id": 3, "page": 4, "text": "…", "manual_name": "금속판_매뉴얼.pdf"}],
            "generator": "extractive",
        }
        session.commit()
        inspection_id = row.id
        overlay_key = inspection_service.file_key(row, "overlay.png")

    response = client.get(f"/api/v1/inspections/{inspection_id}/report.pdf", headers=worker_headers)
    assert response.status_code == 200
    reader, flat = _text(response.content)
    assert len(reader.pages) == 1
    assert len(reader.pages[0].images) == 2
    for expected in (
        "불량:찍힘",
        "이상영역1개",
        "#1위치(10,20)·크기20×20px",
        "금속판_매뉴얼.pdf·4쪽",
        "(5/5)",
    ):
        assert expected in flat, expected
    assert "찍힘부위표시후폐기" in flat

    storage.delete(overlay_key)  # S3 answers NoSuchKey: the report says so instead of failing
    reader, flat = _text(
        client.get(f"/api/v1/inspections/{inspection_id}/report.pdf", headers=worker_headers).content
    )
    assert len(reader.pages[0].images) == 1
    assert "이상영역그림이저장소에없습니다" in flat
