"""weir: engines package."""
