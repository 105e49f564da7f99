"""weir: replay package."""
