"""Pairing in person: two devices make and share a pad."""
