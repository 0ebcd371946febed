"""Readers of downstream evaluation files; each validates its format and names file, record and fix on errors."""
