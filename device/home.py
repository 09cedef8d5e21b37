"""Opening a device home, unlocking it first if it has a PIN."""

from __future__ import annotations

import os

from device.errors import DeviceError
from device.storage.lock import DeviceLocked, StoreLock, read_pin_file
from device.storage.padstore import PadStore


class WrongPin(DeviceError):
    """Wrong PIN."""

    code = "wrong-pin"


def open_home(home: str | os.PathLike[str], pin_file: str | os.PathLike[str] | None = None,
              pin_flag: str = "--pin-file") -> PadStore:
    """The store of ``home``; a PIN-locked home is unlocked with the PIN in ``pin_file``.

    A wrong PIN counts like one typed on the device: it doubles the wait before
    the next try and, repeated, wipes the device.
    """
    lock = StoreLock(home)
    if not lock.locked_home:
        return PadStore(home)
    if pin_file is None:
        raise DeviceLocked(f"{home} is PIN-locked: pass {pin_flag} (or unlock it on its screen).")
    result = lock.unlock(read_pin_file(pin_file))
    if not result.ok:
        raise WrongPin(result.message)
    return PadStore(home, storage_key=lock.key)
