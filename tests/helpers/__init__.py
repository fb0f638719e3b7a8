"""Helpers shared by the test tiers (a package: tests import them, not each other by file path)."""
