"""Attribute-based keys on the device: CP-ABE (Waters 2011) as a KEM over BLS12-381.

``policy`` parses policies and builds their LSSS; ``scheme`` is the KEM;
``encoding`` the versioned binary forms; ``store`` keeps master and member keys
in the device store (they never leave it); ``grant`` issues keys in person;
``cli`` is ``otc abe``. docs/abe.md explains the scheme.
"""
