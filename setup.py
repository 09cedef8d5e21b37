"""One Time Chat: end-to-end encrypted chat whose keys never touch the laptop."""

from setuptools import find_packages, setup

PARTS = ("onetimechat", "device", "client", "relay", "hrng", "provisioning")

# The laptop client, and the shared protocol code every role uses.
CLIENT = [
    "cryptography>=42",
    "requests>=2.31",
    # The laptop's half of `otc client pair` (SPAKE2 over the pairing code); the device has the other half.
    "spake2>=0.9",
    "platformdirs>=4",
    "prompt_toolkit>=3.0.36",
    # Shell completion for bash and zsh (README: one line to turn it on).
    "argcomplete>=3.1",
]
# The pad device: its RPC and console (Flask under waitress), the touchscreen (pygame), pads and the
# HRNG's checks (numpy), serial HRNGs (pyserial), attribute-based keys, the PIN-sealed store.
DEVICE = [
    "flask>=3.0",
    "waitress>=3.0",
    "numpy>=1.26",
    "pygame>=2.5",
    "pyserial>=3.5",
    # BLS12-381 pairings for attribute-based keys (wheels for x86_64 and aarch64).
    "py-arkworks-bls12381>=0.5,<0.6",
    # SQLCipher: a PIN-locked device home's store sealed whole (docs/pin-lock.md). Self-contained
    # manylinux wheels (SQLCipher 4 with OpenSSL built in) for cp311 on x86_64 and aarch64 since 0.6.2.
    "sqlcipher3>=0.6.2",
]
# The untrusted relay: a mailbox server (Flask under waitress); SQLite by default.
RELAY = ["flask>=3.0", "waitress>=3.0"]
# The relay's PostgreSQL storage.
POSTGRES = ["psycopg[binary]>=3.1"]

setup(
    name="onetimechat",
    version="0.1.0",
    description="End-to-end encrypted one-time-pad chat whose keys never touch the laptop",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=[f"{part}*" for part in PARTS]),
    # A plain install is the laptop client (`otc client|send|recv|chat|outbox|who|room`, and carrying
    # the in-person ceremonies between its device and the other laptop): none of the device's or the
    # relay's stack. Each role adds its extra; `otc` names the extra a command lacks (onetimechat/cli).
    install_requires=CLIENT,
    extras_require={
        "device": DEVICE,
        "relay": RELAY,
        # PostgreSQL for the relay (docs/relay-protocol.md): the relay's set and psycopg.
        "postgres": RELAY + POSTGRES,
        # The Pi image (image/build.sh installs `[device,pi]`): RPi.GPIO over the kernel's gpiochip
        # (Debian's arm64 kernel has no /dev/gpiomem). It carries the device's set too, so
        # `onetimechat[pi]` alone is never a device without its stack; it installs only on a Pi.
        "pi": DEVICE + ["rpi-lgpio>=0.6"],
        "test": ["pytest>=8", "hypothesis>=6.100", *POSTGRES, "pexpect>=4.9", "pyte>=0.8",
                 # Charm's policy parser, for the differential test of ours (fetched at test time).
                 "pyparsing>=3.0"],
        "dev": ["ruff>=0.5", "mypy>=1.10", "import-linter>=2.1"],
    },
    entry_points={"console_scripts": ["otc = onetimechat.cli:run"]},
)
