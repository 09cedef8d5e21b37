"""The hardware random number generator: sources, health tests and the mixer.

Layers, from the inside out:

* :mod:`hrng.health` -- SP 800-90B continuous health tests, pure computation;
* :mod:`hrng.estimate` -- min-entropy and chi-square estimates, pure computation;
* :mod:`hrng.sources` -- random sources named by URL (serial, OneRNG, file, os:);
* :mod:`hrng.mixer` -- the XOR of every checked hardware source and the OS CSPRNG;
* :mod:`hrng.emulator` -- a serial HRNG on a pseudo-terminal, for tests and demos;
* :mod:`onetimechat.cli.hrng` -- the ``otc hrng`` commands.

Importing any of them touches no hardware. ``docs/hrng.md`` has the details.
"""
