"""DefectLens: a self-hostable defect assistant for factories."""

__version__ = "0.1.0"
