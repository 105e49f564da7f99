"""Benchmarks: they print figures and assert nothing (see CONVENTIONS.md, Tests)."""
