"""Touches and clicks as one pointer.

Depending on the stack, a touch on the panel arrives as SDL finger events
(normalised coordinates), as mouse events, or as both: SDL synthesises mouse
events from touches (pygame marks them ``touch=True``) and, when asked to,
finger events from the mouse (touch id -1). Each real contact must act once,
so the synthesised copies are dropped. One pointer at a time: a second finger
(a palm, a thumb resting on the bezel) is ignored while the first is down.
"""

from __future__ import annotations

from dataclasses import dataclass

import pygame

MOUSE_TOUCH_ID = -1  # SDL_MOUSE_TOUCHID: a finger event SDL made from the mouse


@dataclass(frozen=True)
class Pointer:
    kind: str  # "down", "move", "up"
    pos: tuple[int, int]
    via: str  # "finger" or "mouse"


class PointerInput:
    """Turns pygame events into :class:`Pointer` events for a ``size`` screen."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self._finger: tuple[int, int] | None = None  # (touch_id, finger_id) of the finger down
        self._mouse_down = False

    def _finger_pos(self, event: pygame.event.Event) -> tuple[int, int]:
        w, h = self.size
        return (min(max(int(event.x * w), 0), w - 1), min(max(int(event.y * h), 0), h - 1))

    def translate(self, event: pygame.event.Event) -> Pointer | None:
        kind = event.type
        if kind in (pygame.FINGERDOWN, pygame.FINGERMOTION, pygame.FINGERUP):
            if getattr(event, "touch_id", 0) == MOUSE_TOUCH_ID:
                return None
            finger = (event.touch_id, event.finger_id)
            if kind == pygame.FINGERDOWN:
                if self._finger is not None or self._mouse_down:
                    return None
                self._finger = finger
                return Pointer("down", self._finger_pos(event), "finger")
            if finger != self._finger:
                return None
            if kind == pygame.FINGERUP:
                self._finger = None
                return Pointer("up", self._finger_pos(event), "finger")
            return Pointer("move", self._finger_pos(event), "finger")
        if kind in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEMOTION, pygame.MOUSEBUTTONUP):
            if getattr(event, "touch", False):
                return None
            pos = (int(event.pos[0]), int(event.pos[1]))
            if kind == pygame.MOUSEBUTTONDOWN:
                if event.button != 1 or self._finger is not None or self._mouse_down:
                    return None
                self._mouse_down = True
                return Pointer("down", pos, "mouse")
            if not self._mouse_down:
                return None
            if kind == pygame.MOUSEBUTTONUP:
                if event.button != 1:
                    return None
                self._mouse_down = False
                return Pointer("up", pos, "mouse")
            return Pointer("move", pos, "mouse")
        return None

    def cancel(self) -> None:
        """Forget the pointer down (the window lost focus)."""
        self._finger = None
        self._mouse_down = False
