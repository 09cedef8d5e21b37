"""Frames to the kernel's framebuffer device (/dev/fbN), in the device's own pixel format.

Both the Pi's vc4 driver and QEMU's virtio-gpu provide ``/dev/fb0`` through
DRM's fbdev emulation, so one writer shows the screens on both: pygame draws
offscreen, and each frame is converted to the framebuffer's format by SDL's blitter (read
with the FBIOGET_VSCREENINFO and FBIOGET_FSCREENINFO ioctls: 32-bit XRGB,
16-bit RGB565, 24-bit RGB, any true-colour bitfields) and written at the
visible page's offset. The 800x480 screens sit in the middle of a larger
framebuffer; the borders are cleared once.

The structures are parsed from their bytes (:meth:`Geometry.parse`), so a
test can describe a framebuffer of any geometry and let the writer write to
a plain file standing in for the device.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from dataclasses import dataclass

import numpy as np
import pygame

FBIOGET_VSCREENINFO = 0x4600
FBIOGET_FSCREENINFO = 0x4602
FB_VISUAL_TRUECOLOR = 2


class _Bitfield(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint32), ("length", ctypes.c_uint32), ("msb_right", ctypes.c_uint32)]


class _VarScreenInfo(ctypes.Structure):
    """struct fb_var_screeninfo (linux/fb.h)."""

    _fields_ = [
        ("xres", ctypes.c_uint32), ("yres", ctypes.c_uint32),
        ("xres_virtual", ctypes.c_uint32), ("yres_virtual", ctypes.c_uint32),
        ("xoffset", ctypes.c_uint32), ("yoffset", ctypes.c_uint32),
        ("bits_per_pixel", ctypes.c_uint32), ("grayscale", ctypes.c_uint32),
        ("red", _Bitfield), ("green", _Bitfield), ("blue", _Bitfield), ("transp", _Bitfield),
        ("nonstd", ctypes.c_uint32), ("activate", ctypes.c_uint32),
        ("height", ctypes.c_uint32), ("width", ctypes.c_uint32), ("accel_flags", ctypes.c_uint32),
        ("pixclock", ctypes.c_uint32), ("left_margin", ctypes.c_uint32), ("right_margin", ctypes.c_uint32),
        ("upper_margin", ctypes.c_uint32), ("lower_margin", ctypes.c_uint32),
        ("hsync_len", ctypes.c_uint32), ("vsync_len", ctypes.c_uint32),
        ("sync", ctypes.c_uint32), ("vmode", ctypes.c_uint32), ("rotate", ctypes.c_uint32),
        ("colorspace", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 4),
    ]


class _FixScreenInfo(ctypes.Structure):
    """struct fb_fix_screeninfo (linux/fb.h)."""

    _fields_ = [
        ("id", ctypes.c_char * 16), ("smem_start", ctypes.c_ulong), ("smem_len", ctypes.c_uint32),
        ("type", ctypes.c_uint32), ("type_aux", ctypes.c_uint32), ("visual", ctypes.c_uint32),
        ("xpanstep", ctypes.c_uint16), ("ypanstep", ctypes.c_uint16), ("ywrapstep", ctypes.c_uint16),
        ("line_length", ctypes.c_uint32), ("mmio_start", ctypes.c_ulong), ("mmio_len", ctypes.c_uint32),
        ("accel", ctypes.c_uint32), ("capabilities", ctypes.c_uint16), ("reserved", ctypes.c_uint16 * 2),
    ]


VAR_SIZE = ctypes.sizeof(_VarScreenInfo)
FIX_SIZE = ctypes.sizeof(_FixScreenInfo)


class FramebufferError(Exception):
    """The framebuffer cannot show the screens."""


@dataclass(frozen=True)
class Channel:
    offset: int  # the channel's lowest bit in the pixel value
    length: int  # its bits


@dataclass(frozen=True)
class Geometry:
    """What a frame needs to know of the framebuffer."""

    name: str
    xres: int
    yres: int
    xoffset: int  # the visible page within the virtual screen
    yoffset: int
    bits_per_pixel: int
    red: Channel
    green: Channel
    blue: Channel
    transp: Channel
    line_length: int  # bytes from one row to the next
    smem_len: int  # bytes of framebuffer memory
    visual: int

    @classmethod
    def parse(cls, var: bytes, fix: bytes) -> Geometry:
        """From the bytes of struct fb_var_screeninfo and struct fb_fix_screeninfo."""
        v = _VarScreenInfo.from_buffer_copy(var[:VAR_SIZE].ljust(VAR_SIZE, b"\0"))
        f = _FixScreenInfo.from_buffer_copy(fix[:FIX_SIZE].ljust(FIX_SIZE, b"\0"))
        return cls(f.id.decode("ascii", "replace"), v.xres, v.yres, v.xoffset, v.yoffset, v.bits_per_pixel,
                   Channel(v.red.offset, v.red.length), Channel(v.green.offset, v.green.length),
                   Channel(v.blue.offset, v.blue.length), Channel(v.transp.offset, v.transp.length),
                   f.line_length, f.smem_len, f.visual)

    @classmethod
    def read(cls, fd: int) -> Geometry:
        """Ask the framebuffer device open on ``fd``."""
        var, fix = bytearray(VAR_SIZE), bytearray(FIX_SIZE)
        fcntl.ioctl(fd, FBIOGET_VSCREENINFO, var)
        fcntl.ioctl(fd, FBIOGET_FSCREENINFO, fix)
        return cls.parse(bytes(var), bytes(fix))

    @property
    def bytes_per_pixel(self) -> int:
        return (self.bits_per_pixel + 7) // 8

    def check(self) -> None:
        """Raise :class:`FramebufferError` unless frames can be written in this format."""
        if self.bits_per_pixel not in (16, 24, 32) or self.visual != FB_VISUAL_TRUECOLOR:
            raise FramebufferError(f"the framebuffer {self.name!r} is {self.bits_per_pixel}-bit with visual "
                                   f"{self.visual}; only true colour at 16, 24 or 32 bits is drawn")
        for channel in (self.red, self.green, self.blue):
            if not 1 <= channel.length <= 8 or channel.offset + channel.length > self.bits_per_pixel:
                raise FramebufferError(f"the framebuffer {self.name!r} has a colour channel the screens cannot "
                                       f"draw ({channel})")
        if self.line_length < self.xres * self.bytes_per_pixel:
            raise FramebufferError(f"the framebuffer {self.name!r} has rows shorter than its width")
        if (self.yoffset + self.yres) * self.line_length > self.smem_len:
            raise FramebufferError(f"the framebuffer {self.name!r} is smaller than its visible page")

    def fits(self, size: tuple[int, int]) -> tuple[int, int]:
        """Where a ``size`` frame goes: its top-left corner on the visible page (centred)."""
        w, h = size
        if w > self.xres or h > self.yres:
            raise FramebufferError(f"the framebuffer {self.name!r} is {self.xres}x{self.yres}, smaller than the "
                                   f"screens' {w}x{h}")
        return (self.xres - w) // 2, (self.yres - h) // 2


def _mask(channel: Channel) -> int:
    return ((1 << channel.length) - 1) << channel.offset


def convert(surface: pygame.Surface, geometry: Geometry) -> np.ndarray:
    """The surface's pixels in the framebuffer's format: an array of rows of bytes (height, width * Bpp).

    SDL's blitter converts (in C): onto a surface whose masks are the framebuffer's bitfields."""
    w, h = surface.get_size()
    bpp = geometry.bytes_per_pixel
    masks = (_mask(geometry.red), _mask(geometry.green), _mask(geometry.blue), _mask(geometry.transp))
    target = pygame.Surface((w, h), pygame.SRCALPHA if masks[3] else 0, geometry.bits_per_pixel, masks)
    target.blit(surface, (0, 0))
    if masks[3]:
        target.fill((0, 0, 0, 255), special_flags=pygame.BLEND_RGBA_MAX)  # opaque
    rows = np.frombuffer(target.get_buffer().raw, dtype=np.uint8).reshape(h, target.get_pitch())
    return rows[:, : w * bpp]


class FramebufferWriter:
    """Writes frames of a fixed size to a framebuffer (or a file standing in for one) open on ``fd``."""

    def __init__(self, fd: int, geometry: Geometry, size: tuple[int, int]) -> None:
        geometry.check()
        self.fd = fd
        self.geometry = geometry
        self.size = size
        self.origin = geometry.fits(size)
        self._cleared = False

    def _page_offset(self, row: int) -> int:
        g = self.geometry
        return (g.yoffset + row) * g.line_length + g.xoffset * g.bytes_per_pixel

    def clear(self) -> None:
        """Black over the whole visible page (what is around the frame)."""
        g = self.geometry
        blank = bytes(g.line_length)
        for row in range(g.yres):
            os.pwrite(self.fd, blank[: g.line_length - g.xoffset * g.bytes_per_pixel], self._page_offset(row))

    def write(self, surface: pygame.Surface) -> None:
        """Show ``surface`` (of the writer's size)."""
        if surface.get_size() != self.size:
            raise FramebufferError(f"a frame of {surface.get_size()} for a writer of {self.size}")
        if not self._cleared:
            self.clear()
            self._cleared = True
        g = self.geometry
        pixels = convert(surface, g)
        ox, oy = self.origin
        bpp = g.bytes_per_pixel
        h = self.size[1]
        if ox == 0 and g.xoffset == 0 and g.line_length == pixels.shape[1] and pixels.flags.c_contiguous:
            os.pwrite(self.fd, pixels.tobytes(), self._page_offset(oy))  # one write: rows are contiguous
            return
        for row in range(h):
            os.pwrite(self.fd, pixels[row].tobytes(), self._page_offset(oy + row) + ox * bpp)
