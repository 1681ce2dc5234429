"""Deterministic demo data: synthetic product/defect images with masks and Korean PDF manuals.

Public API lives in app.demo.generator (kept out of this module so ``python -m app.demo.generator``
runs without a double import).
"""
