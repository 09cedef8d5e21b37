"""Attribute-based rooms on the device (DESIGN.md "Attribute-based rooms").

``wire`` holds the room descriptor, invite strings and the byte forms of the
four relay items (contribution, distribution, message, leave); ``protocol`` is
the room protocol as a pure state machine over a storage interface
(``storage``). Keys and epoch secrets never leave the device. docs/rooms.md
explains the protocol and what a later theft can open.
"""
