"""The device image's recipe, checked without building it (image/, `make image`).

The units' command lines go through the real `otc` argument parser; the
network file is read for the cable-side address and its DHCP server; the
first-boot screens run on SDL's dummy driver; `auto` confirmation is refused
where the image's production marker exists; the shell scripts pass `bash -n`
(and shellcheck, where it is installed).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from device import confirm
from device import production as real_device
from device.storage.lock import StoreLock
from device.storage.padstore import DB_NAME, PadStore
from device.touchscreen import firstboot
from device.touchscreen.testing import Screen, use_dummy_drivers
from device.ui import LockState
from hrng.sources import parse_url
from onetimechat import cli, terminal
from onetimechat.errors import UsageError
from tests.conftest import ROOT, build_wheel

IMAGE = ROOT / "image"
UNITS = IMAGE / "rootfs/etc/systemd/system"
NETWORK = IMAGE / "rootfs/etc/systemd/network"
OTC = "/usr/local/bin/otc"
HOME = "/var/lib/otc"
# Groups a bookworm base system has before our sysusers.d adds its own.
DEBIAN_GROUPS = {"video", "render", "input", "dialout"}
REMOTE_LOGIN = ("openssh-server", "dropbear", "telnetd", "openssh", "ssh", "tinysshd", "rsh-server", "vnc")


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as {section: [(key, value), ...]}, repeated keys kept in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}: bad section line {raw!r}"
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"{path.name}: bad line {raw!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{section}/{key}: {found}"
    return found[0]


def exec_args(unit_name: str) -> list[str]:
    return shlex.split(value(parse_unit(UNITS / unit_name), "Service", "ExecStart"))


def otc_args(unit_name: str):
    argv = exec_args(unit_name)
    assert argv[0] == OTC
    return cli.build_parser().parse_args(argv[1:])  # the real parser: a wrong flag raises UsageError


def cable_address() -> ipaddress.IPv4Interface:
    net = parse_unit(NETWORK / "10-otc-cable.network")
    return ipaddress.IPv4Interface(value(net, "Network", "Address"))


# -- the units ----------------------------------------------------------------------------------


def test_device_unit_serves_the_touchscreen_on_the_cable_address_only():
    from device.server import parse_listen
    from onetimechat.cli.device import cmd_serve

    args = otc_args("otc-device.service")
    assert args.func is cmd_serve
    assert args.confirm == "touchscreen"
    assert str(args.home) == HOME
    assert args.pin_file is None  # the owner unlocks on the screen; no PIN on disk
    assert [parse_url(u).path for u in args.hrng] == ["/dev/hwrng"]  # pads and room keys mix the Pi's HRNG
    assert all(parse_url(u).hardware for u in args.hrng)
    host, port = parse_listen(args.listen)
    assert ipaddress.ip_address(host) == cable_address().ip
    assert 1024 < port < 65536
    unit = parse_unit(UNITS / "otc-device.service")
    assert value(unit, "Unit", "ConditionPathExists") == f"{HOME}/{DB_NAME}"
    env = dict(item.split("=", 1) for item in shlex.split(value(unit, "Service", "Environment")))
    assert env["OTC_PANEL"] == "fbdev"  # frames to /dev/fb0, touches from evdev
    allowed = " ".join(values(unit, "Service", "IPAddressAllow")).split()
    assert value(unit, "Service", "IPAddressDeny") == "any"
    assert str(cable_address().network) in allowed


def test_hrng_unit_reads_the_pis_generator_through_the_health_tests():
    from onetimechat.cli.hrng import cmd_test

    args = otc_args("otc-hrng.service")
    assert args.func is cmd_test
    spec = parse_url(args.source)
    assert spec.hardware
    assert not args.insecure


def test_firstboot_unit_runs_the_set_up_screens_until_the_device_exists():
    argv = exec_args("otc-firstboot.service")
    assert argv[:3] == ["/usr/bin/python3", "-m", "device.touchscreen.firstboot"]
    args = firstboot.build_parser().parse_args(argv[3:])
    assert str(args.home) == HOME
    assert not args.windowed
    unit = parse_unit(UNITS / "otc-firstboot.service")
    assert value(unit, "Unit", "ConditionPathExists") == f"!{HOME}/{DB_NAME}"
    assert "otc-device.service" in value(unit, "Unit", "Before").split()
    assert value(unit, "Unit", "OnSuccess") == "otc-device.service"


@pytest.mark.parametrize("name", ["otc-device.service", "otc-firstboot.service", "otc-hrng.service"])
def test_device_units_are_started_at_boot_restarted_and_hardened(name):
    unit = parse_unit(UNITS / name)
    assert value(unit, "Install", "WantedBy") == "multi-user.target"
    assert value(unit, "Service", "Restart") == "on-failure"
    assert value(unit, "Unit", "StartLimitIntervalSec") == "0"  # never give up on the device
    assert value(unit, "Service", "User") == "otc"
    for key, expected in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                          "PrivateTmp": "yes", "CapabilityBoundingSet": "", "DevicePolicy": "closed",
                          "RestrictNamespaces": "yes", "SystemCallArchitectures": "native"}.items():
        assert value(unit, "Service", key) == expected, key
    # Every group it asks for exists on the image.
    sysusers = (IMAGE / "rootfs/etc/sysusers.d/otc.conf").read_text().splitlines()
    declared = {line.split()[1] for line in sysusers if line[:1] in ("g", "u")}
    assert "otc" in declared
    for group in " ".join(values(unit, "Service", "SupplementaryGroups")).split():
        assert group in DEBIAN_GROUPS | declared, group


def test_every_unit_the_recipe_enables_exists_and_logins_are_masked():
    recipe = (IMAGE / "build.sh").read_text()
    enable = recipe.split("enable --quiet", 1)[1].split("\n#", 1)[0]
    for name in shlex.split(enable.replace("\\\n", " ")):
        if name.startswith("otc-"):
            assert (UNITS / name).exists(), name
    mask = recipe.split("mask --quiet", 1)[1].split("\n", 2)
    masked = " ".join(mask[:2])
    for getty in ("getty@.service", "serial-getty@.service", "autovt@.service"):
        assert getty in masked


# -- the network --------------------------------------------------------------------------------


def test_cable_network_has_a_fixed_address_and_hands_the_laptop_one():
    net = parse_unit(NETWORK / "10-otc-cable.network")
    address = cable_address()
    assert address.network.is_private
    assert set(value(net, "Match", "Name").split()) == {"eth0", "end0"}  # the Pi (either naming) and QEMU
    assert value(net, "Network", "DHCPServer") == "yes"
    assert value(net, "Network", "ConfigureWithoutCarrier") == "yes"  # up before the cable is in
    dhcp = dict(net["DHCPServer"])
    pool = [address.network.network_address + int(dhcp["PoolOffset"]) + i for i in range(int(dhcp["PoolSize"]))]
    assert all(ip in address.network and ip != address.ip for ip in pool)
    # The laptop keeps its own route and DNS: the device is not a router.
    assert dhcp["EmitRouter"] == "no" and dhcp["EmitDNS"] == "no"
    for key in ("LLMNR", "MulticastDNS", "IPv6AcceptRA", "LinkLocalAddressing"):
        assert value(net, "Network", key) == "no", key


def test_no_other_interface_is_configured_and_no_remote_login_is_installed():
    assert [p.name for p in NETWORK.iterdir()] == ["10-otc-cable.network"]
    packages = [line.split("#")[0].strip() for line in (IMAGE / "packages.txt").read_text().splitlines()]
    assert not {p for p in packages if p} & set(REMOTE_LOGIN)
    assert "ip_forward = 0" in (IMAGE / "rootfs/etc/sysctl.d/60-otc.conf").read_text()


# -- the first boot -----------------------------------------------------------------------------


@pytest.fixture
def setup_screen(tmp_path):
    use_dummy_drivers()
    app = firstboot.FirstBootApp(tmp_path / "otc", fullscreen=False, driver="dummy", arm_delay=0.0)
    yield Screen(app)
    app.close()


def type_name(screen: Screen, name: str) -> None:
    for ch in name:
        if ch.isupper():
            screen.tap("shift")
        screen.tap(f"char-{ch}")


def test_first_boot_names_the_device_and_creates_it_pin_locked(setup_screen, tmp_path):
    screen = setup_screen
    assert screen.refresh().screen == "first-name"
    assert screen.shows("Name this device")
    assert not screen.target("next").enabled
    type_name(screen, "Alice-pi")
    assert screen.texts("name") == ["Alice-pi"]
    screen.tap("next")
    assert screen.refresh().screen == "first-start"  # the touchscreen's own PIN screen
    assert screen.shows("Alice-pi") and screen.shows("Choose a PIN for this device")
    screen.type_pin("246813")
    assert screen.shows("Type the same PIN again")
    screen.type_pin("246813")
    home = tmp_path / "otc"
    assert screen.app.done.is_set()
    assert PadStore.peek_name(home) is None  # sealed with the PIN
    lock = StoreLock(home)
    assert lock.locked_home and lock.status().state == LockState.LOCKED
    assert lock.unlock("246813").ok
    with PadStore(home, storage_key=lock.key) as store:
        assert store.device_name == "Alice-pi" and store.sealed
    assert "246813" not in "".join(p.read_text(errors="replace") for p in home.iterdir() if p.is_file())


def test_first_boot_pins_must_match_and_names_must_be_valid(setup_screen, tmp_path):
    screen = setup_screen
    screen.refresh()
    assert not screen.target("char--").enabled  # a name starts with a letter or digit
    type_name(screen, "bob")
    screen.tap("delete")
    assert screen.texts("name") == ["bo"]
    screen.tap("next")
    screen.refresh()
    screen.type_pin("135792")
    screen.type_pin("135793")
    assert screen.shows("The two PINs differ")
    assert not (tmp_path / "otc" / DB_NAME).exists()
    screen.type_pin("135792")
    screen.type_pin("135792")
    lock = StoreLock(tmp_path / "otc")
    assert lock.unlock("135792").ok
    with PadStore(tmp_path / "otc", storage_key=lock.key) as store:
        assert store.device_name == "bo"


def test_first_boot_stops_at_32_characters(setup_screen):
    screen = setup_screen
    screen.refresh()
    type_name(screen, "a" * 32)
    assert not screen.target("char-b").enabled
    assert screen.target("next").enabled


def test_first_boot_does_nothing_when_the_device_exists(tmp_path, capsys):
    PadStore.init(tmp_path / "otc", "carol").close()
    assert firstboot.main(["--home", str(tmp_path / "otc")]) == 0  # no display is opened
    assert "already holds a device" in capsys.readouterr().err


# -- auto confirmation on the image ---------------------------------------------------------------


@pytest.fixture
def production(tmp_path, monkeypatch):
    marker = tmp_path / "production"
    marker.write_text("image\n")
    monkeypatch.setattr(real_device, "MARKER", marker)
    return marker


def test_the_image_ships_the_production_marker():
    assert (IMAGE / "rootfs" / str(real_device.MARKER).lstrip("/")).is_file()


def test_auto_confirmation_is_refused_on_the_image(production, tmp_path):
    with pytest.raises(confirm.AutoRefused):
        confirm.make_source("auto", tmp_path)
    with pytest.raises(confirm.AutoRefused):
        confirm.AutoConfirm(tmp_path)
    assert confirm.make_source("tty").name == "tty"  # the other sources are untouched


def test_auto_confirmation_works_off_the_image(tmp_path, monkeypatch):
    monkeypatch.setattr(real_device, "MARKER", tmp_path / "absent")
    assert confirm.make_source("auto", tmp_path).name == "auto"


def test_serve_and_package_with_auto_fail_on_the_image_with_one_line(production, tmp_path, capsys):
    home = tmp_path / "dev"
    PadStore.init(home, "dave").close()
    code = cli.main(["device", "serve", "--home", str(home), "--listen", "127.0.0.1:0", "--confirm", "auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err == [f"ERROR: {confirm.AutoRefused.user_text()}"]
    code = cli.main(["device", "package", "--home", str(home), "--confirm", "auto", "erin"])
    assert code != 0 and "ERROR: Confirmation mode 'auto' is for tests" in capsys.readouterr().err


def test_pairing_in_person_with_auto_is_refused_on_the_image(production):
    with pytest.raises(confirm.AutoRefused):
        confirm.compare_pairing_string("auto")


def test_attribute_grants_with_auto_are_refused_on_the_image(production):
    from device.abe.grant import confirm_grant

    with pytest.raises(confirm.AutoRefused):
        confirm_grant("auto")
    if terminal.has_terminal():
        assert callable(confirm_grant("tty"))
    else:  # tty is allowed on the image; here there is no terminal to ask on, and it says so
        with pytest.raises(UsageError, match="No terminal"):
            confirm_grant("tty")


# -- the scripts ----------------------------------------------------------------------------------

SCRIPTS = sorted([*IMAGE.glob("*.sh"), IMAGE / "test/otc-image-test-report",
                  IMAGE / "rootfs/usr/local/sbin/otc-growroot"])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
    subprocess.run([shell, "-n", str(script)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_scripts_pass_shellcheck():
    # `make test` installs shellcheck (scripts/ensure-test-deps.sh); the project's own scripts too.
    others = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS + others)], check=True, cwd=ROOT)


def test_mirror_comes_from_the_machines_apt_sources(tmp_path):
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d/distro.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (apt / "sources.list.d/other.list").write_text(
        "deb [signed-by=/etc/apt/keyrings/other.gpg] http://other.example/linux/debian bookworm stable\n")
    out = subprocess.run(["bash", "-c", f'. "{IMAGE}/lib.sh"; image_sources'], env={"APT_ETC": str(apt)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert out == [
        f"deb {keyring} http://mirror.example/debian bookworm main non-free-firmware",
        f"deb {keyring} http://mirror.example/debian bookworm-updates main non-free-firmware",
        f"deb {keyring} http://mirror.example/debian-security bookworm-security main non-free-firmware",
    ]


def image_module(name: str):
    """One of image/'s helper scripts, imported (image/ is not a package: it is not installed)."""
    spec = importlib.util.spec_from_file_location(f"image_{name}", IMAGE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_wheels_requirements_skip_debians_pygame_and_add_the_pis_gpio():
    module = image_module("requirements")
    metadata = ("Metadata-Version: 2.1\nName: onetimechat\nRequires-Dist: cryptography>=42\n"
                "Requires-Dist: pygame>=2.5\nRequires-Dist: tomli; python_version < \"3.11\"\n"
                "Provides-Extra: pi\nRequires-Dist: rpi-lgpio>=0.6; extra == \"pi\"\n"
                "Provides-Extra: test\nRequires-Dist: pytest>=8; extra == \"test\"\n")
    assert module.requirements(metadata, ["pi"], ["PyGame"]) == [
        "cryptography>=42", 'tomli; python_version < "3.11"', "rpi-lgpio>=0.6"]


def test_the_image_installs_the_device_and_the_pis_extras_of_the_real_wheel(tmp_path):
    # The recipe's own line: the device's stack and the Pi's GPIO, not the relay's or the tests' extras.
    recipe = (IMAGE / "build.sh").read_text()
    assert '--extra device --extra pi --without pygame' in recipe
    module = image_module("requirements")
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        metadata = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    names = [re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower()
             for spec in module.requirements(metadata, ["device", "pi"], ["pygame"])]
    assert len(names) == len(set(names))
    assert {"cryptography", "requests", "spake2", "flask", "waitress", "numpy", "pyserial", "py-arkworks-bls12381",
            "sqlcipher3", "rpi-lgpio"} <= set(names)
    assert not {"pygame", "pytest", "psycopg", "ruff"} & set(names)


def test_the_boot_report_check():
    module = image_module("check_report")
    good = "\n".join([
        "OTC-REPORT-BEGIN",
        *(f"unit {u} active" for u in ("otc-device", "otc-hrng", "otc-growroot", "systemd-networkd")),
        "unit otc-firstboot inactive",
        "listen udp 0.0.0.0%eth0:67",
        "listen tcp 10.77.0.1:8470",
        "failed 0",
        "imports ok",
        "panel-fds 3",
        "root-mib 1900",
        "OTC-REPORT-END",
    ])
    assert module.problems(module.parse(good), "10.77.0.1:8470") == []
    bad = good.replace("unit otc-hrng active", "unit otc-hrng failed").replace("failed 0", "failed 1") \
        .replace("imports ok", "imports failed ImportError: lgpio").replace("panel-fds 3", "panel-fds 0") + \
        "\nlisten tcp 0.0.0.0:22\nlisten udp 0.0.0.0:67"
    found = module.problems(module.parse(bad), "10.77.0.1:8470")
    assert found == ["otc-hrng.service is failed, not active", "failed units: 1",
                     "the image's Python packages do not all import: failed ImportError: lgpio",
                     "the device's touchscreen does not hold the display (no framebuffer open in its process)",
                     "something else listens: tcp 0.0.0.0:22", "something else listens: udp 0.0.0.0:67"]


def test_the_end_to_end_run_reads_a_pairing_code_off_the_panels_pixels(tmp_path):
    """image/e2e.py reads the code from a screendump (a PPM, with noise): each digit against the ten drawn."""
    import numpy as np

    e2e = image_module("e2e")
    ref = e2e.Reference(tmp_path / "ref")
    rng = np.random.default_rng(25)
    for code in ("4071-9352", "1111-8888", "0369-2580"):
        snap = e2e.Snapshot(device_name=e2e.NAME, lock=e2e.PinStatus(e2e.LockState.UNLOCKED),
                            confirm_mode="touchscreen", pairing_code=code)
        pixels, _ = ref.draw(snap)
        noisy = np.clip(pixels.astype(int) + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
        ppm = b"P6\n800 480\n255\n" + noisy.tobytes()
        shown = e2e.read_ppm(ppm)

        class Panel(e2e.Run):
            def __init__(self) -> None:  # the run's screen reading only: no QEMU
                self.ref, self.deadline, self.n, self.work = ref, float("inf"), 0, tmp_path

            def shot(self):
                return shown

        assert Panel().read_code() == code
    ref.app.close()
