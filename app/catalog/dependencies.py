"""Load-or-404 dependencies for catalog objects."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.catalog import service
from app.db.session import SessionDep
from app.db.tables import DefectType, Product


def load_product(product_id: int, session: SessionDep) -> Product:
    """The product in the path, or 404."""
    return service.get_product(session, product_id=product_id)


def load_defect_type(defect_type_id: int, session: SessionDep) -> DefectType:
    """The defect type in the path, or 404."""
    return service.get_defect_type(session, defect_type_id=defect_type_id)


ProductDep = Annotated[Product, Depends(load_product)]
DefectTypeDep = Annotated[DefectType, Depends(load_defect_type)]
