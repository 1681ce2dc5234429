"""Products, defect types, reference images, manuals (upload/storage), preprocessing and model settings."""
