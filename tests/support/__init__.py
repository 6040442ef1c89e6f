"""Helpers shared by the unit and integration tiers."""
