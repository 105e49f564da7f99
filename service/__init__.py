"""weir: service package."""
