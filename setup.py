"""One Time Chat: end-to-end encrypted chat whose keys never touch the laptop."""

from setuptools import find_packages, setup

PARTS = ("onetimechat", "device", "client", "relay", "hrng", "provisioning")

setup(
    name="onetimechat",
    version="0.1.0",
    description="End-to-end encrypted one-time-pad chat whose keys never touch the laptop",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=[f"{part}*" for part in PARTS]),
    install_requires=[
        "cryptography>=42",
        "numpy>=1.26",
        "flask>=3.0",
        "waitress>=3.0",
        "requests>=2.31",
        "spake2>=0.9",
        "pyserial>=3.5",
        "platformdirs>=4",
        "pygame>=2.5",
        "prompt_toolkit>=3.0.36",
        # Shell completion for bash and zsh (README: one line to turn it on).
        "argcomplete>=3.1",
        # BLS12-381 pairings for attribute-based keys (wheels for x86_64 and aarch64).
        "py-arkworks-bls12381>=0.5,<0.6",
        # SQLCipher: a PIN-locked device home's store sealed whole (docs/pin-lock.md). Self-contained
        # manylinux wheels (SQLCipher 4 with OpenSSL built in) for cp311 on x86_64 and aarch64 since 0.6.2.
        "sqlcipher3>=0.6.2",
    ],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1"],
        # On the Pi only: RPi.GPIO over the kernel's gpiochip (Debian's arm64 kernel has no /dev/gpiomem).
        "pi": ["rpi-lgpio>=0.6"],
        "test": ["pytest>=8", "hypothesis>=6.100", "psycopg[binary]>=3.1", "pexpect>=4.9", "pyte>=0.8",
                 # Charm's policy parser, for the differential test of ours (fetched at test time).
                 "pyparsing>=3.0"],
        "dev": ["ruff>=0.5", "mypy>=1.10", "import-linter>=2.1"],
    },
    entry_points={"console_scripts": ["otc = onetimechat.cli:run"]},
)
