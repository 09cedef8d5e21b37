"""The framebuffer panel: frames written in the framebuffer's own format, taps read from evdev streams.

This machine has no /dev/fb0, /dev/input or /dev/uinput, so the device
files are plain files: a framebuffer of a given geometry (its ioctl
structures packed here from linux/fb.h's layout) and recorded event streams
(struct input_event packed here from linux/input.h's layout): the Pi's 7"
panel (multitouch with single-touch emulation) and QEMU's virtio tablet.
The app on top is the real one, with the real broker: a tap in the stream
must land on the button under it.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pygame
import pytest

from device.confirm import ConfirmBroker, ConfirmRequest, ConfirmUnavailable
from device.touchscreen.app import TouchscreenApp
from device.touchscreen.evdev import (
    Axis,
    Capabilities,
    Touch,
    TouchError,
    TouchTracker,
    find_touch_device,
    parse_bitmap,
    read_events,
)
from device.touchscreen.fbdev import Geometry
from device.touchscreen.panel import FramebufferPanel, SdlPanel, panel_from_setting
from device.touchscreen.testing import use_dummy_drivers
from device.ui import Console, ContactView, LockState, PanelSource, PinResult, PinStatus

# -- the kernel's structures, packed by the test ------------------------------------------------------

# struct input_event on a 64-bit kernel: struct timeval {long tv_sec; long tv_usec}, __u16 type, __u16 code,
# __s32 value.
EVENT = struct.Struct("<qqHHi")
EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
SYN_REPORT, SYN_DROPPED = 0, 3
BTN_LEFT, BTN_TOUCH = 0x110, 0x14A
ABS_X, ABS_Y, ABS_MT_SLOT, ABS_MT_POSITION_X, ABS_MT_POSITION_Y, ABS_MT_TRACKING_ID = 0, 1, 0x2F, 0x35, 0x36, 0x39


def ev(etype: int, code: int, value: int, t: float = 1.0) -> bytes:
    return EVENT.pack(int(t), int((t % 1) * 1e6), etype, code, value)


def syn() -> bytes:
    return ev(EV_SYN, SYN_REPORT, 0)


def fb_var(xres, yres, bpp, red, green, blue, transp=(0, 0), yres_virtual=None, xoffset=0, yoffset=0) -> bytes:
    """struct fb_var_screeninfo: 8 __u32, 4 struct fb_bitfield {offset, length, msb_right}, 16 __u32, 4 reserved."""
    fields = [xres, yres, xres, yres_virtual or yres, xoffset, yoffset, bpp, 0]
    for off, length in (red, green, blue, transp):
        fields += [off, length, 0]
    fields += [0] * 16 + [0] * 4
    return struct.pack("<40I", *fields)


def fb_fix(name: bytes, line_length: int, smem_len: int, visual: int = 2) -> bytes:
    """struct fb_fix_screeninfo on a 64-bit kernel (80 bytes)."""
    layout = struct.Struct("<16sQIIII3H2xI4xQIIH2H2x")
    assert layout.size == 80
    return layout.pack(name, 0, smem_len, 0, 0, visual, 0, 0, 0, line_length, 0, 0, 0, 0, 0, 0)


XRGB_1024x600_PAGE2 = (fb_var(1024, 600, 32, (16, 8), (8, 8), (0, 8), yres_virtual=1200, yoffset=600),
                       fb_fix(b"virtio_gpudrmfb", 1088 * 4, 1088 * 4 * 1200))
RGB565_800x480 = (fb_var(800, 480, 16, (11, 5), (5, 6), (0, 5)), fb_fix(b"vc4drmfb", 1600, 1600 * 480))

# The Pi's 7" panel (rpi-ts/edt-ft5x06): multitouch, with the first finger as ABS_X/ABS_Y and BTN_TOUCH.
PI_PANEL = Capabilities(abs=frozenset({ABS_X, ABS_Y, ABS_MT_SLOT, ABS_MT_POSITION_X, ABS_MT_POSITION_Y,
                                       ABS_MT_TRACKING_ID}), key=frozenset({BTN_TOUCH}), props=frozenset({1}))
PI_AXES = (Axis(0, 799), Axis(0, 479))
# QEMU's virtio-tablet-pci (and usb-tablet): ABS_X/ABS_Y over 0..32767 and a left button.
TABLET = Capabilities(abs=frozenset({ABS_X, ABS_Y}), key=frozenset({BTN_LEFT, 0x111, 0x112}))
TABLET_AXES = (Axis(0, 32767), Axis(0, 32767))


def pi_tap(x: int, y: int, tracking: int = 7) -> bytes:
    """A finger down and up on the Pi's panel, as its driver reports it (panel units are pixels)."""
    return b"".join([
        ev(EV_ABS, ABS_MT_SLOT, 0), ev(EV_ABS, ABS_MT_TRACKING_ID, tracking),
        ev(EV_ABS, ABS_MT_POSITION_X, x), ev(EV_ABS, ABS_MT_POSITION_Y, y),
        ev(EV_KEY, BTN_TOUCH, 1), ev(EV_ABS, ABS_X, x), ev(EV_ABS, ABS_Y, y), syn(),
        ev(EV_ABS, ABS_MT_TRACKING_ID, -1), ev(EV_KEY, BTN_TOUCH, 0), syn(),
    ])


def tablet_tap(x: int, y: int, screen: tuple[int, int]) -> bytes:
    """A click of QEMU's tablet at screen pixel (x, y): QEMU scales the screen to 0..32767."""
    ax, ay = round(x * 32767 / (screen[0] - 1)), round(y * 32767 / (screen[1] - 1))
    return b"".join([ev(EV_ABS, ABS_X, ax), ev(EV_ABS, ABS_Y, ay), syn(),
                     ev(EV_KEY, BTN_LEFT, 1), syn(), ev(EV_KEY, BTN_LEFT, 0), syn()])


def rgb_of(surface: pygame.Surface) -> np.ndarray:
    w, h = surface.get_size()
    return np.frombuffer(pygame.image.tobytes(surface, "RGB"), np.uint8).reshape(h, w, 3)


# -- the framebuffer ----------------------------------------------------------------------------------


class Recording:
    """A file standing in for /dev/input/eventN: the test appends what the device would report."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")

    def add(self, data: bytes) -> None:
        with self.path.open("ab") as f:
            f.write(data)


class UnlockLock:
    """A PIN lock (device/ui.py's protocol) that unlocks with one PIN."""

    def __init__(self, pin: str) -> None:
        self.pin, self.unlocked, self.tries = pin, False, []

    def status(self) -> PinStatus:
        return PinStatus(LockState.UNLOCKED if self.unlocked else LockState.LOCKED)

    def unlock(self, pin: str) -> PinResult:
        self.tries.append(pin)
        self.unlocked = pin == self.pin
        return PinResult(self.unlocked, self.status(), "Unlocked." if self.unlocked else "Wrong PIN.")

    def set_pin(self, pin: str) -> PinResult:
        return PinResult(False, self.status(), "no")

    def change_pin(self, old: str, new: str) -> PinResult:
        return PinResult(False, self.status(), "no")


@pytest.fixture
def panel_app(tmp_path):
    """(app, fb file, recording, broker): the real app on a framebuffer panel over plain files."""
    use_dummy_drivers()
    apps = []

    def make(geometry, caps, axes, fill: int = 0xAA, lock=None):
        var, fix = geometry
        g = Geometry.parse(var, fix)
        fb = tmp_path / "fb0"
        fb.write_bytes(bytes([fill]) * g.smem_len)
        touch = Recording(tmp_path / "event0")
        console = Console("alice", "touchscreen", lock=lock,
                          status=lambda: ((ContactView("bob", 10_000, 20_000, 20_000, 20_000),), (), "ok"))
        broker = ConfirmBroker(PanelSource(console), timeout=10.0, on_queue=console.set_queued)
        panel = FramebufferPanel(fb, touch.path, geometry=g, touch_caps=caps, touch_axes=axes)
        app = TouchscreenApp(console, fullscreen=True, panel=panel, arm_delay=0.0)
        apps.append(app)
        return app, fb, touch, broker

    yield make
    for app in apps:
        app.close()


def test_geometry_is_read_from_the_kernels_structures():
    g = Geometry.parse(*XRGB_1024x600_PAGE2)
    assert (g.name.rstrip("\0"), g.xres, g.yres, g.yoffset, g.bits_per_pixel, g.line_length) == \
        ("virtio_gpudrmfb", 1024, 600, 600, 32, 4352)
    assert (g.red.offset, g.green.offset, g.blue.offset, g.red.length) == (16, 8, 0, 8)
    g = Geometry.parse(*RGB565_800x480)
    assert (g.bits_per_pixel, g.red, g.green, g.blue) == (16, type(g.red)(11, 5), type(g.red)(5, 6),
                                                          type(g.red)(0, 5))


def test_xrgb_frames_land_centred_on_the_visible_page(panel_app):
    app, fb, _, _ = panel_app(XRGB_1024x600_PAGE2, TABLET, TABLET_AXES)
    app.render()
    assert app.frame.screen == "home"
    data = np.frombuffer(fb.read_bytes(), np.uint8).reshape(1200, 4352)
    assert (data[:600] == 0xAA).all(), "the page not on show was written"
    page = data[600:, : 1024 * 4].reshape(600, 1024, 4)
    shown = page[:, :, [2, 1, 0]]  # XRGB8888 little-endian: B, G, R, X in memory
    ox, oy = (1024 - 800) // 2, (600 - 480) // 2
    assert (shown[oy:oy + 480, ox:ox + 800] == rgb_of(app.surface)).all()
    border = np.ones((600, 1024), bool)
    border[oy:oy + 480, ox:ox + 800] = False
    assert (page[border] == 0).all(), "the border is not black"
    assert (data[600:, 1024 * 4:] == 0).all()  # the rows' padding, cleared with the page


def test_rgb565_frames_keep_the_top_bits_of_each_channel(panel_app):
    app, fb, _, _ = panel_app(RGB565_800x480, PI_PANEL, PI_AXES)
    app.render()
    value = np.frombuffer(fb.read_bytes(), "<u2").reshape(480, 800)
    rgb = rgb_of(app.surface).astype(np.uint16)
    expected = ((rgb[:, :, 0] >> 3) << 11) | ((rgb[:, :, 1] >> 2) << 5) | (rgb[:, :, 2] >> 3)
    assert (value == expected).all()
    assert len(np.unique(value)) > 3  # a drawn screen, not a blank one


@pytest.mark.parametrize("geometry, problem", [
    ((fb_var(800, 480, 8, (0, 8), (0, 8), (0, 8)), fb_fix(b"palette", 800, 800 * 480, visual=3)), "8-bit"),
    ((fb_var(640, 480, 32, (16, 8), (8, 8), (0, 8)), fb_fix(b"small", 2560, 2560 * 480)), "smaller than"),
])
def test_a_framebuffer_the_screens_cannot_use_is_refused_by_name(tmp_path, geometry, problem):
    use_dummy_drivers()
    fb = tmp_path / "fb0"
    fb.write_bytes(bytes(4096))
    panel = FramebufferPanel(fb, tmp_path / "none", geometry=Geometry.parse(*geometry))
    with pytest.raises(ConfirmUnavailable, match=problem):
        panel.open((800, 480), True)


def test_a_missing_framebuffer_is_refused_with_its_path(tmp_path):
    use_dummy_drivers()
    with pytest.raises(ConfirmUnavailable, match="fb7"):
        FramebufferPanel(tmp_path / "fb7").open((800, 480), True)


# -- evdev streams ------------------------------------------------------------------------------------


def test_a_pi_panel_tap_is_one_down_and_one_up_where_the_finger_was():
    tracker = TouchTracker(PI_PANEL, *PI_AXES, size=(800, 480))
    assert tracker.feed(read_events(pi_tap(640, 410))) == [Touch("down", (640, 410)), Touch("up", (640, 410))]


def test_a_second_finger_on_the_pi_panel_is_ignored():
    stream = b"".join([
        ev(EV_ABS, ABS_MT_SLOT, 0), ev(EV_ABS, ABS_MT_TRACKING_ID, 1), ev(EV_ABS, ABS_MT_POSITION_X, 100),
        ev(EV_ABS, ABS_MT_POSITION_Y, 100), ev(EV_KEY, BTN_TOUCH, 1), ev(EV_ABS, ABS_X, 100),
        ev(EV_ABS, ABS_Y, 100), syn(),
        # A thumb on the bezel: slot 1. The emulated pointer stays on the first finger.
        ev(EV_ABS, ABS_MT_SLOT, 1), ev(EV_ABS, ABS_MT_TRACKING_ID, 2), ev(EV_ABS, ABS_MT_POSITION_X, 790),
        ev(EV_ABS, ABS_MT_POSITION_Y, 470), syn(),
        ev(EV_ABS, ABS_MT_SLOT, 0), ev(EV_ABS, ABS_MT_POSITION_X, 110), ev(EV_ABS, ABS_X, 110), syn(),
        ev(EV_ABS, ABS_MT_TRACKING_ID, -1), ev(EV_ABS, ABS_MT_SLOT, 1), ev(EV_ABS, ABS_MT_TRACKING_ID, -1),
        ev(EV_KEY, BTN_TOUCH, 0), syn(),
    ])
    tracker = TouchTracker(PI_PANEL, *PI_AXES, size=(800, 480))
    assert tracker.feed(read_events(stream)) == [Touch("down", (100, 100)), Touch("move", (110, 100)),
                                                 Touch("up", (110, 100))]


def test_a_multitouch_only_device_follows_its_first_contact():
    caps = Capabilities(abs=frozenset({ABS_MT_SLOT, ABS_MT_POSITION_X, ABS_MT_POSITION_Y, ABS_MT_TRACKING_ID}),
                        key=frozenset())
    stream = b"".join([
        ev(EV_ABS, ABS_MT_SLOT, 3), ev(EV_ABS, ABS_MT_TRACKING_ID, 9), ev(EV_ABS, ABS_MT_POSITION_X, 4095),
        ev(EV_ABS, ABS_MT_POSITION_Y, 0), syn(), ev(EV_ABS, ABS_MT_TRACKING_ID, -1), syn(),
    ])
    tracker = TouchTracker(caps, Axis(0, 4095), Axis(0, 4095), size=(800, 480))
    assert tracker.feed(read_events(stream)) == [Touch("down", (799, 0)), Touch("up", (799, 0))]


def test_qemus_tablet_range_maps_to_the_screen_ends_and_middle():
    tracker = TouchTracker(TABLET, *TABLET_AXES, size=(1024, 600))
    assert tracker.feed(read_events(tablet_tap(0, 0, (1024, 600))))[0] == Touch("down", (0, 0))
    assert tracker.feed(read_events(tablet_tap(1023, 599, (1024, 600))))[0] == Touch("down", (1023, 599))
    assert tracker.feed(read_events(tablet_tap(512, 300, (1024, 600))))[0] == Touch("down", (512, 300))


def test_a_reader_opened_after_earlier_touches_starts_from_the_axes_values():
    """The kernel sends an axis only when it changes: the second process to read the tablet (the device after
    the first-start screens) sees no ABS_X for a tap straight below the last one."""
    last_x = round(700 * 32767 / 799)
    stream = b"".join([ev(EV_ABS, ABS_Y, round(100 * 32767 / 479)), syn(), ev(EV_KEY, BTN_LEFT, 1), syn(),
                       ev(EV_KEY, BTN_LEFT, 0), syn()])
    opened_later = TouchTracker(TABLET, Axis(0, 32767, last_x), Axis(0, 32767, 0), size=(800, 480))
    assert opened_later.feed(read_events(stream)) == [Touch("down", (700, 100)), Touch("up", (700, 100))]


def test_a_stream_the_kernel_dropped_part_of_is_skipped_to_the_next_report():
    stream = b"".join([ev(EV_ABS, ABS_X, 1000), ev(EV_SYN, SYN_DROPPED, 0), ev(EV_KEY, BTN_LEFT, 1), syn(),
                       ev(EV_ABS, ABS_X, 32767), ev(EV_ABS, ABS_Y, 0), ev(EV_KEY, BTN_LEFT, 1), syn(),
                       ev(EV_KEY, BTN_LEFT, 0), syn()])
    tracker = TouchTracker(TABLET, *TABLET_AXES, size=(800, 480))
    assert tracker.feed(read_events(stream)) == [Touch("down", (799, 0)), Touch("up", (799, 0))]


def test_half_an_event_waits_for_its_other_half(tmp_path):
    from device.touchscreen.evdev import TouchDevice

    rec = Recording(tmp_path / "event0")
    device = TouchDevice(rec.path, (800, 480), caps=PI_PANEL, axes=PI_AXES)
    try:
        data = pi_tap(10, 20)
        rec.add(data[:37])
        assert device.read() == []
        rec.add(data[37:])
        assert device.read() == [Touch("down", (10, 20)), Touch("up", (10, 20))]
    finally:
        device.close()


def sysfs_device(root: Path, name: str, abs_bits: str, key_bits: str, props: str = "0") -> None:
    d = root / name / "device"
    (d / "capabilities").mkdir(parents=True)
    (d / "capabilities" / "abs").write_text(abs_bits + "\n")
    (d / "capabilities" / "key").write_text(key_bits + "\n")
    (d / "properties").write_text(props + "\n")


def test_the_touch_device_is_found_by_its_capabilities(tmp_path):
    root = tmp_path / "input"
    # As the kernel prints them (hex unsigned longs, most significant first).
    sysfs_device(root, "event0", "0", "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe")  # keyboard
    sysfs_device(root, "event1", "0", "1f0000 0 0 0 0")  # a mouse: buttons, no absolute axes
    sysfs_device(root, "event2", "3", "70000 0 0 0 0")  # QEMU's virtio tablet: ABS_X/Y, BTN_LEFT..
    with pytest.raises(TouchError):
        find_touch_device(tmp_path / "nothing", Path("/dev/input"))
    assert find_touch_device(root, Path("/dev/input")) == Path("/dev/input/event2")
    sysfs_device(root, "event10", "260800000000003", "400 0 0 0 0 0", props="2")  # the Pi's 7" panel
    assert find_touch_device(root, Path("/dev/input")) == Path("/dev/input/event10")
    assert parse_bitmap("260800000000003") == {ABS_X, ABS_Y, ABS_MT_SLOT, ABS_MT_POSITION_X,
                                               ABS_MT_POSITION_Y, ABS_MT_TRACKING_ID}
    assert parse_bitmap("400 0 0 0 0 0") == {BTN_TOUCH}


# -- taps through the whole panel, onto real screens ----------------------------------------------


def centre(app: TouchscreenApp, name: str) -> tuple[int, int]:
    x, y, w, h = next(t.rect for t in app.frame.targets if t.name == name)
    return x + w // 2, y + h // 2


def wait_screen(app: TouchscreenApp, screen: str) -> None:
    for _ in range(500):
        if app.step().screen == screen:
            return
        app.console.changed.wait(0.01)
    raise AssertionError(f"still on {app.frame.screen}")


def step_until(app: TouchscreenApp, answer: list[bool]) -> None:
    """Turn the app's loop (which reads the touch device) until the broker has its answer."""
    for _ in range(500):
        app.step()
        if answer:
            return
        app.console.changed.wait(0.01)


def ask(broker: ConfirmBroker, text: str) -> tuple[threading.Thread, list[bool]]:
    answer: list[bool] = []
    req = ConfirmRequest(contact="bob", kind="text", plaintext=text.encode(), consumes=len(text) + 16,
                         left_after=10_000)
    thread = threading.Thread(target=lambda: answer.append(broker.ask(req)), daemon=True)
    thread.start()
    return thread, answer


@pytest.mark.parametrize("stream", ["pi-panel", "qemu-tablet"])
def test_taps_from_the_stream_answer_the_confirm_screen(panel_app, stream):
    if stream == "pi-panel":
        app, _, touch, broker = panel_app(RGB565_800x480, PI_PANEL, PI_AXES)
        tap = pi_tap
    else:
        app, _, touch, broker = panel_app(XRGB_1024x600_PAGE2, TABLET, TABLET_AXES)
        def tap(x: int, y: int) -> bytes:  # the frame sits at (112, 60) of the 1024x600 screen
            return tablet_tap(x + 112, y + 60, (1024, 600))
    for text, button, expected in (("Dinner at eight?", "accept", True), ("Not this one.", "decline", False)):
        thread, answer = ask(broker, text)
        wait_screen(app, "confirm")
        touch.add(tap(*centre(app, button)))
        step_until(app, answer)
        thread.join(5)
        assert answer == [expected]
        wait_screen(app, "home")


def test_a_tap_beside_the_button_does_nothing(panel_app):
    app, _, touch, broker = panel_app(XRGB_1024x600_PAGE2, TABLET, TABLET_AXES)
    thread, answer = ask(broker, "Careful.")
    wait_screen(app, "confirm")
    x, y, w, h = next(t.rect for t in app.frame.targets if t.name == "accept")
    touch.add(tablet_tap(x + 112 - 3, y + 60 + h // 2, (1024, 600)))  # 3 pixels left of Accept
    for _ in range(5):
        app.step()
    assert answer == [] and app.frame.screen == "confirm"
    x, y = centre(app, "decline")
    touch.add(tablet_tap(x + 112, y + 60, (1024, 600)))
    step_until(app, answer)
    thread.join(5)
    assert answer == [False]


def test_the_pin_typed_by_taps_unlocks(panel_app):
    lock = UnlockLock("482716")
    app, _, touch, _ = panel_app(RGB565_800x480, PI_PANEL, PI_AXES, lock=lock)
    wait_screen(app, "lock")
    for key in [*"482716", "ok"]:
        touch.add(pi_tap(*centre(app, key if key == "ok" else f"key-{key}")))
        app.step()
    wait_screen(app, "home")
    assert lock.tries == ["482716"]


# -- choosing the panel -----------------------------------------------------------------------------


def test_the_panel_is_chosen_by_its_setting(monkeypatch):
    monkeypatch.delenv("OTC_TOUCH", raising=False)
    fb = panel_from_setting("fbdev")
    assert isinstance(fb, FramebufferPanel) and fb.fb == Path("/dev/fb0") and fb.touch_path is None
    monkeypatch.setenv("OTC_TOUCH", "/dev/input/event3")
    fb = panel_from_setting("fbdev:/dev/fb1")
    assert isinstance(fb, FramebufferPanel) and fb.fb == Path("/dev/fb1")
    assert fb.touch_path == Path("/dev/input/event3")
    sdl = panel_from_setting("kmsdrm")
    assert isinstance(sdl, SdlPanel) and sdl.driver == "kmsdrm"
    monkeypatch.setenv("OTC_PANEL", "dummy")
    assert isinstance(panel_from_setting(), SdlPanel) and panel_from_setting().driver == "dummy"
    with pytest.raises(ConfirmUnavailable, match="fbdev:/dev/fbN"):
        panel_from_setting("kmsdrm:/dev/dri/card0")
