"""The device's own screen: the pygame UI for the official 7" panel (800x480).

The screen is a view of :class:`device.ui.Console`: every frame is drawn from
``console.snapshot()`` and every tap acts through the console, so what is on
the panel is a function of device state, never of the RPC thread.

* ``app`` -- :class:`~device.touchscreen.app.TouchscreenApp`: opens the
  panel, runs the main loop in the main thread;
* ``panel`` -- the one interface to the display and its touches, chosen by
  ``OTC_PANEL``: the framebuffer (``fbdev``: frames to /dev/fb0 through
  ``fbdev``, touches from the kernel's evdev device through ``evdev``; the
  image), or an SDL driver (``dummy`` in tests, ``kmsdrm``, a window);
* ``screens`` -- which screen applies (lock and first start, then a
  confirmation, the pairing ceremony, a pairing code, home with its alarms)
  and how each one is drawn;
* ``controller`` -- what the screen keeps for itself (digits typed, scroll)
  and what each tap does;
* ``pointer`` -- finger and mouse events as one pointer, without the copies
  SDL synthesises;
* ``canvas``, ``text``, ``frame`` -- drawing, the bundled font and the
  visible form of untrusted text, and the record of what a frame showed.

Every frame records the text and targets it drew as plain data
(:class:`~device.touchscreen.frame.Frame`). ``testing`` reads that record and
touches the screen by posting real pygame events; only tests import it, and
there is no flag or variable that changes what the device does.

Nothing here touches the display on import; pygame's banner is hidden.
"""

import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
