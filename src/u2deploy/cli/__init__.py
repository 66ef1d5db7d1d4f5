"""Thin typer front-ends: parse flags, call the library, print one status line."""
