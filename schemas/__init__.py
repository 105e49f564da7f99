"""weir: schemas package."""
