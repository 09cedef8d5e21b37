"""Drawing for the screens: every call draws and records what it drew in a :class:`Frame`."""

from __future__ import annotations

from collections.abc import Callable

import pygame

from device.touchscreen.frame import Frame, Rect, ScrollArea, Target, TextItem
from device.touchscreen.text import Fonts, MessageLayout, fit, wrap

WIDTH, HEIGHT = 800, 480
MARGIN = 16

Color = tuple[int, int, int]
BACKGROUND: Color = (16, 20, 24)
PANEL: Color = (32, 39, 47)
PANEL_EDGE: Color = (62, 73, 86)
TEXT: Color = (240, 242, 244)
MUTED: Color = (160, 170, 180)
ACCENT: Color = (110, 180, 255)
GOOD: Color = (36, 150, 80)
BAD: Color = (196, 52, 44)
WARN: Color = (232, 168, 40)
KEY: Color = (52, 62, 74)
DISABLED: Color = (40, 45, 51)
DISABLED_TEXT: Color = (100, 106, 112)

BUTTON_COLORS: dict[str, Color] = {"key": KEY, "good": GOOD, "bad": BAD, "plain": PANEL_EDGE}


class Canvas:
    """One render: draws on ``surface`` and records texts, targets and their actions."""

    def __init__(self, surface: pygame.Surface, fonts: Fonts, frame: Frame) -> None:
        self.surface = surface
        self.fonts = fonts
        self.frame = frame
        self.actions: dict[str, Callable[[], None]] = {}
        self.scrollers: dict[str, Callable[[int], None]] = {}

    # -- shapes ----------------------------------------------------------------------

    def fill(self, color: Color, rect: Rect | None = None, radius: int = 0, width: int = 0) -> None:
        if rect is None:
            self.surface.fill(color)
        else:
            pygame.draw.rect(self.surface, color, rect, width, border_radius=radius)

    def bar(self, rect: Rect, fraction: float, color: Color) -> None:
        """A level: ``fraction`` of ``rect`` filled, the rest dark."""
        x, y, w, h = rect
        pygame.draw.rect(self.surface, BACKGROUND, rect, border_radius=h // 2)
        filled = round(w * min(max(fraction, 0.0), 1.0))
        if filled:
            pygame.draw.rect(self.surface, color, (x, y, max(filled, h), h), border_radius=h // 2)
        pygame.draw.rect(self.surface, PANEL_EDGE, rect, 1, border_radius=h // 2)

    def dim(self) -> None:
        """Darken everything drawn so far (under an overlay)."""
        shade = pygame.Surface((WIDTH, HEIGHT), pygame.SRCALPHA)
        shade.fill((0, 0, 0, 180))
        self.surface.blit(shade, (0, 0))

    def modal(self) -> None:
        """An overlay covers the screen: nothing drawn before it can be touched."""
        self.frame.targets.clear()
        self.frame.scroll_areas.clear()
        self.actions.clear()
        self.scrollers.clear()

    def arrow(self, rect: Rect, up: bool, color: Color) -> None:
        x, y, w, h = rect
        cx, cy, s = x + w // 2, y + h // 2, min(w, h) // 4
        points = [(cx - s, cy + s // 2), (cx + s, cy + s // 2), (cx, cy - s)] if up else \
                 [(cx - s, cy - s // 2), (cx + s, cy - s // 2), (cx, cy + s)]
        pygame.draw.polygon(self.surface, color, points)

    def dots(self, count: int, rect: Rect, color: Color, text: str) -> None:
        """``count`` dots centred in ``rect`` (a masked PIN), recorded as ``text``."""
        x, y, w, h = rect
        r, gap = 10, 14
        total = count * 2 * r + max(count - 1, 0) * gap
        left = x + (w - total) // 2
        for i in range(count):
            pygame.draw.circle(self.surface, color, (left + r + i * (2 * r + gap), y + h // 2), r)
        self.frame.texts.append(TextItem(text, rect, "pin"))

    # -- text ------------------------------------------------------------------------

    def text(self, text: str, pos: tuple[int, int], size: int, color: Color = TEXT, *, role: str = "text",
             anchor: str = "topleft", width: int | None = None, min_size: int = 16, keep_end: bool = False
             ) -> pygame.Rect:
        """One line; shrunk (then cut with "…", in the middle with ``keep_end``) to fit ``width`` if given."""
        if width is not None:
            text, size = fit(self.fonts, text, size, width, min_size, keep_end)
        else:
            text = self.fonts.visible(text)
        image = self.fonts.get(size).render(text, True, color)
        rect = image.get_rect(**{anchor: pos})
        self.surface.blit(image, rect)
        self.frame.texts.append(TextItem(text, (rect.x, rect.y, rect.w, rect.h), role))
        return rect

    def paragraph(self, text: str, rect: Rect, size: int, color: Color = TEXT, *, role: str = "text",
                  align: str = "left", middle: bool = False) -> int:
        """Word-wrapped into ``rect`` (centred in its height if ``middle``); returns the y below the last line."""
        x, y, w, h = rect
        font = self.fonts.get(size)
        step = font.get_linesize()
        lines = wrap(self.fonts, text, size, w)
        if middle:
            y += max((h - len(lines) * step) // 2, 0)
        for line in lines:
            if y + step > rect[1] + h + step // 3:
                break  # the device's own texts are sized to fit; never draw outside the box
            image = font.render(line, True, color)
            lx = x + (w - image.get_width()) // 2 if align == "center" else x
            self.surface.blit(image, (lx, y))
            self.frame.texts.append(TextItem(line, (lx, y, image.get_width(), image.get_height()), role))
            y += step
        return y

    def message(self, layout: MessageLayout, rect: Rect, offset: int, color: Color, marker_color: Color) -> None:
        """The visible lines of ``layout`` scrolled by ``offset`` pixels, clipped to ``rect``."""
        x, y, w, h = rect
        first = offset // layout.line_height
        layout.ensure((offset + h) // layout.line_height + 2)
        clip = self.surface.get_clip()
        self.surface.set_clip(rect)
        try:
            for index in range(first, len(layout.lines)):
                top = y + index * layout.line_height - offset
                if top >= y + h:
                    break
                lx = x
                for run in layout.lines[index]:
                    image = layout.font.render(run.text, True, marker_color if run.marker else color)
                    self.surface.blit(image, (lx, top))
                    lx += image.get_width()
                shown = "".join(run.text for run in layout.lines[index])
                self.frame.texts.append(TextItem(shown, (x, top, lx - x, layout.line_height), "message"))
        finally:
            self.surface.set_clip(clip)

    # -- what a touch can hit ----------------------------------------------------------

    def button(self, name: str, label: str, rect: Rect, on_tap: Callable[[], None], *, kind: str = "key",
               enabled: bool = True, size: int = 34, icon: str | None = None) -> None:
        """A target: drawn, recorded, and bound to ``on_tap`` while enabled."""
        face = BUTTON_COLORS[kind] if enabled else DISABLED
        ink = TEXT if enabled else DISABLED_TEXT
        pygame.draw.rect(self.surface, face, rect, border_radius=14)
        if icon in ("up", "down"):
            self.arrow(rect, icon == "up", ink)
        else:
            x, y, w, h = rect
            text, size = fit(self.fonts, label, size, w - 16, 16)
            image = self.fonts.get(size).render(text, True, ink)
            self.surface.blit(image, image.get_rect(center=(x + w // 2, y + h // 2)))
        self.frame.targets.append(Target(name, label, rect, enabled))
        if enabled:
            self.actions[name] = on_tap

    def scroller(self, name: str, rect: Rect, on_drag: Callable[[int], None]) -> None:
        """A drag inside ``rect`` scrolls by the distance dragged."""
        self.frame.scroll_areas.append(ScrollArea(name, rect))
        self.scrollers[name] = on_drag
