"""The framebuffer panel's frame time (`make bench`): figures printed, never asserted.

One frame of the confirm screen drawn by pygame offscreen, converted to the
framebuffer's pixel format and written to a file standing in for /dev/fb0
(tmpfs): 32-bit XRGB (QEMU's virtio-gpu, the Pi's vc4 at 32 bpp) and
16-bit RGB565 (the Pi's fbdev default at 16 bpp). ``draw`` is the screen's
own drawing, ``convert`` the format conversion (SDL's blitter), ``write`` the pwrite.
The screens redraw only on a change (at most ~30 a second) and every 2 s.
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"

from device.touchscreen.fbdev import FramebufferWriter, Geometry, convert  # noqa: E402
from device.touchscreen.panel import SdlPanel  # noqa: E402

ROUNDS = 60


def geometry(bpp: int, channels: tuple[tuple[int, int], ...], width: int = 800, height: int = 480) -> Geometry:
    fields = [width, height, width, height, 0, 0, bpp, 0]
    for off, length in (*channels, (0, 0)):
        fields += [off, length, 0]
    var = struct.pack("<40I", *fields, *[0] * 20)
    line = width * bpp // 8
    fix = struct.pack("<16sQIIII3H2xI4xQIIH2H2x", b"bench", 0, line * height, 0, 0, 2, 0, 0, 0, line, 0, 0, 0, 0,
                      0, 0)
    return Geometry.parse(var, fix)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:6.2f} ms (best {min(samples) * 1000:.2f})"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import screenshots  # the screens with realistic content, as `make screenshots` draws them

    from device.touchscreen.app import TouchscreenApp
    from device.ui import Console

    app = TouchscreenApp(Console("alice", "touchscreen", status=screenshots.status), fullscreen=False,
                         panel=SdlPanel("dummy"), wall=lambda: screenshots.WALL, monotonic=lambda: screenshots.MONO)
    snap = screenshots.base(confirm=screenshots.confirm(screenshots.MESSAGE, 11, queued=1))
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        for name, g in (("XRGB8888", geometry(32, ((16, 8), (8, 8), (0, 8)))),
                        ("RGB565", geometry(16, ((11, 5), (5, 6), (0, 5))))):
            fb = Path(tmp) / "fb0"
            fb.write_bytes(bytes(g.smem_len))
            fd = os.open(fb, os.O_RDWR)
            FramebufferWriter(fd, g, app.size).write(app.surface)  # the format is one the writer takes
            draw, conv, write = [], [], []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                app.render(snap)
                t1 = time.perf_counter()
                pixels = convert(app.surface, g)
                t2 = time.perf_counter()
                os.pwrite(fd, pixels.tobytes(), 0)
                t3 = time.perf_counter()
                draw.append(t1 - t0)
                conv.append(t2 - t1)
                write.append(t3 - t2)
            os.close(fd)
            total = [d + c + w for d, c, w in zip(draw, conv, write, strict=True)]
            print(f"800x480 confirm screen, {name}: draw {ms(draw)}, convert {ms(conv)}, write {ms(write)}; "
                  f"frame {ms(total)}")
    app.close()


if __name__ == "__main__":
    main()
