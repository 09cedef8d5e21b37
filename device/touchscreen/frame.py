"""What one render put on the panel, as plain data.

Every render records the text it drew and the targets a touch can hit, so
the app knows what a touch means and tests can read the screen without
looking at pixels. It is a record of what is already on show: nothing here
can change what the device does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Rect = tuple[int, int, int, int]  # x, y, width, height


def contains(rect: Rect, pos: tuple[float, float]) -> bool:
    x, y, w, h = rect
    return x <= pos[0] < x + w and y <= pos[1] < y + h


@dataclass(frozen=True)
class TextItem:
    text: str
    rect: Rect
    role: str = "text"  # "title", "message", "code", "warning", ... (what the text is for)


@dataclass(frozen=True)
class Target:
    """Something a touch can hit."""

    name: str  # stable: "accept", "decline", "key-5", "dismiss", ...
    label: str
    rect: Rect
    enabled: bool = True


@dataclass(frozen=True)
class ScrollArea:
    """Where a drag scrolls instead of tapping."""

    name: str
    rect: Rect


@dataclass
class Frame:
    screen: str  # "lock", "first-start", "change-pin", "wiped", "home", "confirm", "pairing-code", "ceremony"
    key: str  # this screen instance: a new key means the owner sees something new
    texts: list[TextItem] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    scroll_areas: list[ScrollArea] = field(default_factory=list)
    overlay: str | None = None  # "alarm" when an alarm covers the screen
    redraw_at: float | None = None  # monotonic time at which a countdown on show goes stale

    def target_at(self, pos: tuple[float, float]) -> Target | None:
        # The last drawn is on top.
        for target in reversed(self.targets):
            if contains(target.rect, pos):
                return target
        return None

    def scroll_area_at(self, pos: tuple[float, float]) -> ScrollArea | None:
        for area in reversed(self.scroll_areas):
            if contains(area.rect, pos):
                return area
        return None

    def text(self) -> str:
        """Everything written on screen, one drawn line per line."""
        return "\n".join(item.text for item in self.texts)
