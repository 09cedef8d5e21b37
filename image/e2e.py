"""The image's end-to-end run (image/test.sh): real pixels and real taps on the booted image under QEMU.

    python image/e2e.py --qmp WORK/qmp.sock --port PORT --work WORK

The guest boots fresh (no device home): its touchscreen runs the first-start
screens on /dev/fb0 (virtio-gpu's fbdev emulation) and reads taps from
/dev/input (virtio-tablet). This program is the owner and the laptop:

* it reads the panel with QMP ``screendump`` and compares regions of it
  (titles, names, the message, the buttons) with the same screens drawn
  here by the device's own code on SDL's dummy driver (what
  ``make screenshots`` draws), with a tolerance for font rendering: a score
  is the mean absolute difference of the region's pixels (0: the same,
  1: black against white);
* it taps with QMP ``input-send-event`` (the tablet's absolute axes, then
  its button) at the middle of the buttons that drawing placed;
* it sets the name and a random PIN, unlocks, pairs this machine as the
  laptop with the code read from the screen's pixels (each digit matched
  against the ten digits drawn in its place), makes a pad with a device
  emulated here (the image taps Same), sends a message and taps Accept (the
  package reaches the relay and the other device reads the text), sends
  another and taps Decline (the send is refused); taps Lock (the lock screen
  shows, a call is answered 423 "locked", health still answers), types the
  PIN by taps and sends one more, accepted by a tap; last resets the machine
  as a power cut (the device starts locked) and unlocks it again.

The screendumps compared are saved in WORK as PNG, and their scores in
WORK/scores.json. Secrets (the PIN, the pairing code) are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"

import numpy as np  # noqa: E402
import pexpect  # noqa: E402
import pygame  # noqa: E402
import requests  # noqa: E402

from device.touchscreen.canvas import ACCENT, BACKGROUND  # noqa: E402
from device.touchscreen.firstboot import FirstBootApp  # noqa: E402
from device.touchscreen.frame import Frame, Rect  # noqa: E402
from device.ui import LOCKED_NAME, CeremonyView, ConfirmView, ContactView, LockState, PinStatus, Snapshot  # noqa: E402

SCREEN = (800, 480)
ABS_MAX = 0x7FFF  # QEMU's absolute axes run 0..0x7fff; its tablets report that range to the guest
MATCH = 0.08  # a region matches when its worst tile differs less than this (font rendering differs a little)
TILE = 16
NAME = "qemu-test"
CODE_SIZE = 120  # the pairing code's font size (device/touchscreen/screens.py: draw_pairing_code)
LAPTOP = "host-laptop"
PEER = "peer"


def log(text: str) -> None:
    print(f"  e2e: {text}", flush=True)


class Failed(Exception):
    pass


# -- QEMU's monitor protocol ---------------------------------------------------------------------------


class Qmp:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self.file.readline()
            if not line:
                raise Failed("QEMU closed its monitor")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name: str, **arguments: object) -> object:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise Failed(f"QMP {name}: {reply['error']}")
        return reply.get("return")

    def screendump(self, path: Path) -> np.ndarray:
        """The panel's pixels (height, width, 3)."""
        path.unlink(missing_ok=True)
        self.cmd("screendump", filename=str(path))
        return read_ppm(path.read_bytes())

    def tap(self, pos: tuple[int, int]) -> None:
        """A touch at screen pixel ``pos``: the tablet moves there, its button goes down, then up."""
        x = round(pos[0] * ABS_MAX / (SCREEN[0] - 1))
        y = round(pos[1] * ABS_MAX / (SCREEN[1] - 1))
        self.cmd("input-send-event", events=[{"type": "abs", "data": {"axis": "x", "value": x}},
                                             {"type": "abs", "data": {"axis": "y", "value": y}}])
        self.cmd("input-send-event", events=[{"type": "btn", "data": {"down": True, "button": "left"}}])
        time.sleep(0.05)
        self.cmd("input-send-event", events=[{"type": "btn", "data": {"down": False, "button": "left"}}])


def read_ppm(data: bytes) -> np.ndarray:
    """A binary PPM (P6, maxval 255), as QEMU's screendump writes it."""
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    if not m or m.group(3) != b"255":
        raise Failed("the screendump is not a P6 PPM")
    w, h = int(m.group(1)), int(m.group(2))
    return np.frombuffer(data[m.end():m.end() + w * h * 3], np.uint8).reshape(h, w, 3)


def save_png(pixels: np.ndarray, path: Path) -> None:
    surface = pygame.image.frombuffer(np.ascontiguousarray(pixels).tobytes(), (pixels.shape[1], pixels.shape[0]),
                                      "RGB")
    pygame.image.save(surface, str(path))


# -- the screens drawn here --------------------------------------------------------------------------


class Reference:
    """The device's screens drawn by its own code on SDL's dummy driver (as `make screenshots` draws them)."""

    def __init__(self, home: Path) -> None:
        self.app = FirstBootApp(home, fullscreen=False, driver="dummy", arm_delay=0.0)
        self.app.console.changed.clear()

    def draw(self, snap: Snapshot | None = None, *, naming: str | None = None,
             prepare: Callable[[FirstBootApp], None] | None = None) -> tuple[np.ndarray, Frame]:
        app = self.app
        app.controller.message = None  # a message's layout is kept per request id: draw each one afresh
        app.naming = naming is not None
        app.name = naming or ""
        if snap is None:
            snap = Snapshot(device_name="new device", lock=PinStatus(LockState.NO_PIN), confirm_mode="touchscreen")
        app.render(snap)
        if prepare is not None:
            prepare(app)
        frame = app.render(snap)
        w, h = app.surface.get_size()
        pixels = np.frombuffer(pygame.image.tobytes(app.surface, "RGB"), np.uint8).reshape(h, w, 3).copy()
        return pixels, frame


def score(shot: np.ndarray, ref: np.ndarray, rect: Rect) -> float:
    """How far apart two screens are in ``rect``: the mean absolute difference of the worst 16x16 tile (0 the
    same, 1 black against white). A tile is about a glyph, so one wrong letter in a long line shows fully,
    while anti-aliasing that differs a little spreads thin."""
    if shot.shape != ref.shape:
        return 1.0  # not the panel's mode yet (QEMU's own 640x480 before the guest sets one)
    x, y, w, h = rect
    diff = np.abs(shot[y:y + h, x:x + w].astype(np.int16) - ref[y:y + h, x:x + w].astype(np.int16)).mean(axis=2)
    if not diff.size:
        return 1.0
    worst = 0.0
    for ty in range(0, diff.shape[0], TILE):
        for tx in range(0, diff.shape[1], TILE):
            worst = max(worst, float(diff[ty:ty + TILE, tx:tx + TILE].mean()))
    return worst / 255


def mean_score(shot: np.ndarray, ref: np.ndarray) -> float:
    """The whole screen's mean difference (reported, not judged: it holds the parts not compared)."""
    if shot.shape != ref.shape:
        return 1.0
    return float(np.abs(shot.astype(np.int16) - ref.astype(np.int16)).mean() / 255)


@dataclass
class Comparison:
    name: str
    regions: dict[str, float]
    whole: float

    @property
    def worst(self) -> float:
        return max(self.regions.values())

    def ok(self) -> bool:
        return self.worst < MATCH


def regions_of(frame: Frame, roles: tuple[str, ...], targets: tuple[str, ...]) -> dict[str, Rect]:
    out: dict[str, Rect] = {}
    for item in frame.texts:
        if item.role in roles:
            out[f"{item.role}:{item.text[:24]}"] = item.rect
    for target in frame.targets:
        if target.name in targets:
            out[f"button:{target.name}"] = target.rect
    if not out:
        raise Failed(f"the reference {frame.screen} screen has none of {roles} {targets}")
    return out


def compare(name: str, shot: np.ndarray, ref: np.ndarray, regions: dict[str, Rect]) -> Comparison:
    return Comparison(name, {k: round(score(shot, ref, r), 4) for k, r in regions.items()},
                      round(mean_score(shot, ref), 4))


# -- the run -----------------------------------------------------------------------------------------


class Run:
    def __init__(self, qmp: Qmp, work: Path, port: int, deadline: float) -> None:
        self.qmp, self.work, self.port, self.deadline = qmp, work, port, deadline
        self.ref = Reference(work / "reference-home")  # never created: the screens drawn here set no PIN
        self.scores: dict[str, dict] = {}
        self.n = 0
        self.url = f"http://127.0.0.1:{port}"
        self.env = dict(os.environ, OTC_CLIENT_HOME=str(work / "laptop"))

    def shot(self) -> np.ndarray:
        self.n += 1
        return self.qmp.screendump(self.work / "screen.ppm")

    def wait_for(self, what: str, ref: np.ndarray, regions: dict[str, Rect], timeout: float) -> np.ndarray:
        """Screendumps until the regions match ``ref``; the matching one."""
        end = min(time.monotonic() + timeout, self.deadline)
        last: Comparison | None = None
        while True:
            shot = self.shot()
            last = compare(what, shot, ref, regions)
            if last.ok():
                return shot
            if time.monotonic() > end:
                save_png(shot, self.work / f"failed-{what}.png")
                save_png(ref, self.work / f"failed-{what}-expected.png")
                raise Failed(f"the panel did not show {what} (worst region {last.worst:.3f}: {last.regions}); "
                             f"see {self.work}/failed-{what}.png")
            time.sleep(1.0)

    def keep(self, name: str, shot: np.ndarray, ref: np.ndarray, regions: dict[str, Rect],
             decoy: np.ndarray) -> None:
        """Save a screendump compared, with its scores. ``decoy`` is the same screen drawn with other content
        (another message, another name): the regions must tell it apart, or the comparison proves nothing."""
        c = compare(name, shot, ref, regions)
        d = compare(name, shot, decoy, regions)
        save_png(shot, self.work / f"{name}.png")
        save_png(ref, self.work / f"{name}-expected.png")
        self.scores[name] = {"regions": c.regions, "worst": c.worst, "whole": c.whole, "match_below": MATCH,
                             "decoy_regions": d.regions, "decoy_worst": d.worst}
        log(f"{name}: worst region {c.worst:.4f}, whole screen {c.whole:.4f} ({len(c.regions)} regions; the same "
            f"screen with other content: worst {d.worst:.4f}) -> {name}.png")
        if not c.ok():
            raise Failed(f"{name}: the panel's regions differ from the screen drawn here: {c.regions}")
        if d.ok():
            raise Failed(f"{name}: the regions compared do not tell the screen from one with other content")

    def tap(self, frame: Frame, name: str, settle: float = 0.25) -> None:
        x, y, w, h = next(t.rect for t in frame.targets if t.name == name)
        self.qmp.tap((x + w // 2, y + h // 2))
        time.sleep(settle)

    def otc(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "onetimechat.cli", *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise Failed(f"otc {args[0]} {args[1] if len(args) > 1 else ''} failed: {proc.stderr.strip()[-400:]}")
        return proc

    def background(self, name: str, *args: str) -> Proc:
        return Proc(self.work / f"{name}.log", [sys.executable, "-m", "onetimechat.cli", *args], self.env)

    # -- the steps ----------------------------------------------------------------------------------

    def first_start(self, pin: str, boot_timeout: float) -> None:
        ref, frame = self.ref.draw(naming="")
        regions = regions_of(frame, ("title", "prompt", "hint"), ("char-q", "next"))
        shot = self.wait_for("the first-start screen", ref, regions, boot_timeout)
        self.keep("first-start", shot, ref, regions, decoy=self.ref.draw(naming="q")[0])
        for ch in NAME:
            self.tap(frame, f"char-{ch}", settle=0.15)
        ref, frame = self.ref.draw(naming=NAME)
        self.wait_for("the name typed", ref, regions_of(frame, ("name",), ("next",)), 60)
        self.tap(frame, "next")
        first = Snapshot(device_name=NAME, lock=PinStatus(LockState.NO_PIN), confirm_mode="touchscreen")
        for stage in ("new", "repeat"):
            ref, frame = self.ref.draw(first, prepare=_pin_stage(stage, pin))
            self.wait_for(f"the PIN screen ({stage})", ref, regions_of(frame, ("title", "prompt"), ("key-5",)), 60)
            time.sleep(0.5)  # a new screen ignores touches for 0.4 s
            for d in pin:
                self.tap(frame, f"key-{d}", settle=0.15)
            self.tap(frame, "ok", settle=0.5)
        log("name and PIN set by taps; the device is created (PIN-locked)")

    def unlock(self, pin: str, timeout: float, keep: str = "locked",
               while_locked: Callable[[], None] | None = None) -> None:
        # Locked, the device does not know its own name (it is sealed with the PIN).
        locked = Snapshot(device_name=LOCKED_NAME, lock=PinStatus(LockState.LOCKED), confirm_mode="touchscreen")
        ref, frame = self.ref.draw(locked)
        regions = regions_of(frame, ("title", "device", "prompt"), ("key-1", "key-5", "ok", "delete"))
        shot = self.wait_for("the lock screen", ref, regions, timeout)
        first_pin = Snapshot(device_name=NAME, lock=PinStatus(LockState.NO_PIN), confirm_mode="touchscreen")
        self.keep(keep, shot, ref, regions, decoy=self.ref.draw(first_pin, prepare=_pin_stage("new", pin))[0])
        if while_locked is not None:
            while_locked()
        time.sleep(0.5)
        for d in pin:
            self.tap(frame, f"key-{d}", settle=0.15)
        self.tap(frame, "ok")
        home = Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen")
        ref, frame = self.ref.draw(home)
        self.wait_for("the home screen", ref, regions_of(frame, ("title",), ()), 180)
        log("unlocked by taps")

    def pair_laptop(self) -> None:
        child = pexpect.spawn(sys.executable, ["-m", "onetimechat.cli", "client", "pair", "--device", self.url,
                                               "--name", LAPTOP], env=self.env, encoding="utf-8", timeout=120)
        try:
            child.expect("pairing code")
            code = self.read_code()
            child.sendline(code)
            child.expect(pexpect.EOF)
        finally:
            child.close()
        if child.exitstatus != 0:
            raise Failed(f"otc client pair failed: {(child.before or '').strip()[-300:]}")
        log("this machine paired as the laptop, with the code read from the panel's pixels")

    def read_code(self) -> str:
        """The pairing code on the panel: each glyph found in the code's row (a run of columns with ink) and
        matched against the ten digits drawn here by the screen's font at the screen's size."""
        ref, frame = self.ref.draw(Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED),
                                            confirm_mode="touchscreen", pairing_code="0000-0000"))
        shot = self.wait_for("the pairing code", ref, regions_of(frame, ("title", "text"), ()), 60)
        _, y, _, h = next(t.rect for t in frame.texts if t.role == "code")
        glyphs = [g for g in ink_runs(ink(shot[y:y + h, :, :])) if g.shape[0] > h // 4]  # not the dash
        if len(glyphs) != 8:
            raise Failed(f"the pairing code on the panel has {len(glyphs)} digits, not 8")
        font = self.ref.app.fonts.get(CODE_SIZE)
        templates = []
        for d in "0123456789":
            drawn = font.render(d, True, ACCENT, BACKGROUND)
            pixels = np.frombuffer(pygame.image.tobytes(drawn, "RGB"), np.uint8).reshape(
                drawn.get_height(), drawn.get_width(), 3)
            templates.append(ink_runs(ink(pixels))[0])
        digits = ""
        for glyph in glyphs:
            scores = [glyph_distance(glyph, t) for t in templates]
            best = int(np.argmin(scores))
            if sorted(scores)[1] - scores[best] < 0.02:
                raise Failed("a digit of the pairing code could not be told from another")
            digits += str(best)
        return f"{digits[:4]}-{digits[4:]}"

    def make_pad(self, peer_home: Path) -> None:
        self.otc("device", "init", "--home", str(peer_home), "--name", PEER, "--no-pin")
        host = self.background("pair-host", "pair", "host", "--device", self.url, "--listen", "127.0.0.1:0",
                               "--size", "64K")
        port = host.wait_for(r"waiting for the other device on 127\.0\.0\.1:(\d+)", 60)
        join = self.background("pair-join", "pair", "join", "--home", str(peer_home), "--connect",
                               f"127.0.0.1:{port}", "--confirm", "auto")
        try:
            compare_view = CeremonyView(PEER, "compare", sas="000-000-000")
            ref, frame = self.ref.draw(Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED),
                                                confirm_mode="touchscreen", ceremony=compare_view))
            self.wait_for("the pairing string to compare", ref,
                          regions_of(frame, ("title",), ("same", "different")), 120)
            time.sleep(0.6)
            self.tap(frame, "same")
            done = CeremonyView(PEER, "done", done=65536, total=65536, fingerprint="0000")
            ref, frame = self.ref.draw(Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED),
                                                confirm_mode="touchscreen", ceremony=done))
            self.wait_for("the pad made", ref, regions_of(frame, ("stage",), ("back",)), 180)
            host_rc, host_out = host.finish(120)
            join_rc, join_out = join.finish(120)
        finally:
            host.stop()
            join.stop()
        if host_rc != 0 or join_rc != 0:
            raise Failed(f"the ceremony failed: {host_out[-300:]} {join_out[-300:]}")
        time.sleep(0.5)
        self.tap(frame, "back")
        log(f"a 64 KiB pad made with {PEER} (an emulated device here); Same tapped on the panel")

    def lock(self) -> None:
        """Tap Lock on the home screen (the panel shows it after Decline): the lock screen follows."""
        home = Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                        contacts=(ContactView(PEER, 1, 2, 1, 2),), clients=(LAPTOP,))
        _, frame = self.ref.draw(home)
        time.sleep(0.5)
        self.tap(frame, "lock")
        log("Lock tapped on the home screen")

    def refused_while_locked(self) -> None:
        """While locked, the device answers health and nothing else: the laptop's call gets 423 "locked"."""
        answer = requests.post(self.url + "/v1/call", data=bytes(80), timeout=30,
                               headers={"Content-Type": "application/octet-stream"})
        error = answer.json().get("error") if answer.headers.get("Content-Type", "").startswith("application/json") \
            else None
        if answer.status_code != 423 or error != "locked":
            raise Failed(f"a call to the locked device was answered {answer.status_code} ({error})")
        status = self.otc("client", "status", "--device", self.url, check=False)
        if status.returncode == 0 or "locked" not in status.stderr:
            raise Failed(f"otc client status on the locked device: rc {status.returncode}, "
                         f"{status.stderr.strip()[-200:]}")
        health = requests.get(self.url + "/v1/health", timeout=30).status_code
        if health != 200:
            raise Failed(f"health on the locked device answered {health}")
        said = status.stderr.strip().splitlines()[-1][:120]
        self.scores.setdefault("locked-by-tap", {})["answers_while_locked"] = {
            "call": [answer.status_code, error], "otc client status": said, "health": health}
        log(f"locked: a call is answered 423 locked; otc client status says: {said}; health answers 200")

    def confirm(self, text: str, answer: str, relay: str, keep: str = "confirm") -> Proc:
        send = self.background(f"send-{answer}", "send", "--device", self.url, "--relay", relay, PEER, text)
        view = ConfirmView(request_id=1, contact=PEER, kind="text", text=text, consumes=0, left_after=0,
                           deadline=time.monotonic() + 60, queued=0)
        snap = Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                        confirm=view)
        ref, frame = self.ref.draw(snap)
        regions = regions_of(frame, ("title", "recipient", "message"), ("accept", "decline"))
        shot = self.wait_for(f"the confirm screen ({answer})", ref, regions, 120)
        if answer == "accept" and keep:
            other = ConfirmView(request_id=1, contact="pear", kind="text", text=text.replace("north", "south"),
                                consumes=0, left_after=0, deadline=time.monotonic() + 60, queued=0)
            decoy = self.ref.draw(Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED),
                                           confirm_mode="touchscreen", confirm=other))[0]
            self.keep(keep, shot, ref, regions, decoy)
        time.sleep(0.6)
        self.tap(frame, answer)
        return send

    def after(self, name: str) -> None:
        """The home screen the panel returns to, saved as ``name``."""
        home = Snapshot(device_name=NAME, lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                        contacts=(ContactView(PEER, 1, 2, 1, 2),), clients=(LAPTOP,))
        ref, frame = self.ref.draw(home)
        regions = regions_of(frame, ("title", "heading", "contact", "client"), ())
        shot = self.wait_for(f"the home screen after {name}", ref, regions, 60)
        other = Snapshot(device_name="qemu-tess", lock=PinStatus(LockState.UNLOCKED), confirm_mode="touchscreen",
                         contacts=(ContactView("pear", 1, 2, 1, 2),), clients=(LAPTOP,))
        self.keep(name, shot, ref, regions, decoy=self.ref.draw(other)[0])


def ink(pixels: np.ndarray) -> np.ndarray:
    """How much of the code's colour each pixel holds (0: background, 1: the code's blue)."""
    blue = pixels[:, :, 2].astype(np.float32)
    return np.clip((blue - BACKGROUND[2]) / (ACCENT[2] - BACKGROUND[2]), 0.0, 1.0)


def ink_runs(level: np.ndarray) -> list[np.ndarray]:
    """The glyphs in a row of text, left to right: each run of columns with ink, cropped to its ink."""
    cols = level.max(axis=0) > 0.25
    runs, start = [], None
    for x, on in enumerate([*cols, False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            block = level[:, start:x]
            rows = np.nonzero(block.max(axis=1) > 0.25)[0]
            runs.append(block[rows[0]:rows[-1] + 1])
            start = None
    return runs


def glyph_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean difference of two glyphs' ink, laid top-left on the larger of their boxes."""
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    pa, pb = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    pa[:a.shape[0], :a.shape[1]] = a
    pb[:b.shape[0], :b.shape[1]] = b
    return float(np.abs(pa - pb).mean())


def _pin_stage(stage: str, pin: str) -> Callable[[FirstBootApp], None]:
    def prepare(app: FirstBootApp) -> None:
        app.controller.pin.digits = ""
        app.controller.pin.first = pin if stage == "repeat" else None
    return prepare


class Proc:
    """A command in the background, its output in a log file (never a pipe nobody drains)."""

    def __init__(self, log_path: Path, argv: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first group of ``pattern`` once the output shows it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(pattern, self.output())
            if m:
                return m.group(1)
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise Failed(f"{self.log_path.stem}: no {pattern!r} in its output: {self.output()[-300:]}")

    def finish(self, timeout: float) -> tuple[int, str]:
        return self.popen.wait(timeout), self.output()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qmp", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True, help="the device's port 8470, forwarded here")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole run")
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.timeout
    run = Run(Qmp(args.qmp), args.work, args.port, deadline)
    pin = "".join(secrets.choice("0123456789") for _ in range(8))
    servers: list[Proc] = []
    try:
        run.first_start(pin, boot_timeout=args.timeout)
        log(f"[{time.monotonic() - start:.0f}s] first start done")
        run.unlock(pin, timeout=300)
        log(f"[{time.monotonic() - start:.0f}s] unlocked")
        run.pair_laptop()
        relay_db = args.work / "relay.db"
        relay = run.background("relay", "relay", "serve", "--listen", "127.0.0.1:0", "--db", f"sqlite:///{relay_db}")
        servers.append(relay)
        relay_url = relay.wait_for(r"listening on (http://[0-9.:]+)", 60)
        peer_home = args.work / "peer"
        run.make_pad(peer_home)
        log(f"[{time.monotonic() - start:.0f}s] pad made")

        text = "Meet at the north gate at 7. Bring the blue folder."
        send = run.confirm(text, "accept", relay_url)
        rc, out = send.finish(120)
        if rc != 0:
            raise Failed(f"otc send after Accept failed: {out.strip()[-300:]}")
        run.after("accepted")
        # The package reached the relay: the other device reads the text.
        peer = run.background("peer-device", "device", "serve", "--home", str(peer_home), "--listen",
                              "127.0.0.1:0", "--confirm", "auto")
        servers.append(peer)
        peer_url = peer.wait_for(r"serving on (http://[0-9.:]+)", 60)
        peer_env = dict(run.env, OTC_CLIENT_HOME=str(args.work / "peer-laptop"))
        child = pexpect.spawn(sys.executable, ["-m", "onetimechat.cli", "client", "pair", "--device", peer_url,
                                               "--name", "peer-laptop"], env=peer_env, encoding="utf-8", timeout=60)
        try:
            child.expect("pairing code")
            child.sendline((peer_home / "pairing-code").read_text().strip())  # auto mode writes it there
            child.expect(pexpect.EOF)
        finally:
            child.close()
        got = subprocess.run([sys.executable, "-m", "onetimechat.cli", "recv", "--device", peer_url, "--relay",
                              relay_url, "--wait", "10"], env=peer_env, text=True, capture_output=True, timeout=60)
        if text not in got.stdout:
            raise Failed(f"the other device did not read the message accepted: {got.stdout[-300:]} "
                         f"{got.stderr[-300:]}")
        log(f"[{time.monotonic() - start:.0f}s] Accept tapped: the package went to the relay and {PEER} read it")

        send = run.confirm("This one should not go.", "decline", relay_url)
        rc, out = send.finish(120)
        if rc == 0 or "did not approve" not in out:
            raise Failed(f"otc send after Decline did not report the refusal: {out.strip()[-300:]}")
        log(f"Decline tapped: the send was refused ({out.strip().splitlines()[-1][:100]})")
        run.after("declined")
        # Locked by hand: a tap on Lock, a call refused as locked, the PIN typed by taps, one more message.
        run.lock()
        run.unlock(pin, timeout=120, keep="locked-by-tap", while_locked=run.refused_while_locked)
        log(f"[{time.monotonic() - start:.0f}s] locked by a tap and unlocked by PIN taps")
        text = "Back at the north gate at 9, same folder."
        send = run.confirm(text, "accept", relay_url, keep="confirm-after-unlock")
        rc, out = send.finish(120)
        if rc != 0:
            raise Failed(f"otc send after the unlock failed: {out.strip()[-300:]}")
        run.after("accepted-after-unlock")
        log(f"[{time.monotonic() - start:.0f}s] a message sent after the unlock, accepted by a tap")
        # Power-cut and restart: the device starts locked; the PIN typed on the panel unlocks it.
        run.qmp.cmd("system_reset")
        log(f"[{time.monotonic() - start:.0f}s] reset (as a power cut); waiting for the lock screen")
        run.unlock(pin, timeout=300, keep="locked-after-restart")
        log(f"[{time.monotonic() - start:.0f}s] unlocked again after the restart")
    finally:
        for server in servers:
            server.stop()
        (args.work / "scores.json").write_text(json.dumps(run.scores, indent=2) + "\n")
    log(f"passed in {time.monotonic() - start:.0f}s; {run.n} screendumps taken; scores in {args.work}/scores.json")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        print(f"image-test: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
