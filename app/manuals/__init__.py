"""Product response manuals: upload, storage, (indexing and retrieval come with the guidance feature)."""
