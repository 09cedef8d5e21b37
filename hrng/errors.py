"""Errors of the hardware random source.

Every error that stops random generation derives from :class:`HRNGError`. The
texts name the source and the test that failed, never a sample value: a
sample is pad material until it is known to be bad. ``docs/hrng.md`` lists the
codes.
"""

from __future__ import annotations

from onetimechat.errors import OTCError


class HRNGError(OTCError):
    """The hardware random source failed; nothing it gave since its last checked window was used."""

    code = "hrng"


class InvalidSourceURL(HRNGError):
    """Not a random source URL (try serial:///dev/ttyACM0, onerng:///dev/ttyACM0, file:///dev/hwrng or os:)."""

    code = "hrng-url"
    exit_status = 2


class InsecureSource(HRNGError):
    """The OS CSPRNG alone is not a hardware random source; name a hardware source, or say explicitly that
    insecure output is wanted."""

    code = "hrng-insecure"
    exit_status = 2


class SourceUnavailable(HRNGError):
    """The random source cannot be opened."""

    code = "hrng-unavailable"


class SourceDisconnected(HRNGError):
    """The random source was disconnected; generation stopped and nothing since its last checked window was used."""

    code = "hrng-disconnected"


class SourceStalled(HRNGError):
    """The random source stopped sending; generation stopped and nothing since its last checked window was used."""

    code = "hrng-stalled"


class SourceHalted(HRNGError):
    """This random source stopped after a failure; open it again, which repeats its start-up test."""

    code = "hrng-halted"


class HealthTestFailure(HRNGError):
    """HRNG ALARM: the hardware random source failed a health test; generation stopped and nothing since its
    last passing window was used."""

    code = "hrng-alarm"

    def __init__(self, *, test: str, source: str, sample: int, cutoff: int, startup: bool) -> None:
        self.test = test  # "RCT" or "APT"
        self.source = source
        self.sample = sample  # index of the failing sample in the source's stream, from 0
        self.cutoff = cutoff
        self.startup = startup
        self.first: HealthTestFailure | None = None  # set on a second alarm: the one the draw recovered from
        super().__init__(self._text("generation stopped and nothing since its last passing window was used."))

    def _what(self) -> str:
        what = {
            "RCT": f"Repetition Count Test (one value {self.cutoff} times in a row)",
            "APT": f"Adaptive Proportion Test (one value {self.cutoff} times in a window)",
        }[self.test]
        phase = "start-up test" if self.startup else "continuous test"
        return f"the {what} at sample {self.sample} ({phase})"

    def _text(self, outcome: str) -> str:
        return f"HRNG ALARM: {self.source} failed {self._what()}; {outcome}"

    def after(self, first: HealthTestFailure) -> HealthTestFailure:
        """This alarm as the second in one draw, after ``first`` (which the draw recovered from): it stops."""
        self.first = first
        self.message = (f"HRNG ALARM: {self.source} failed {self._what()}, a second alarm in one draw (the first: "
                        f"{first._what()}); generation stopped and nothing since its last passing window was used.")
        self.args = (self.message,)
        return self

    def recovered(self) -> str:
        """What is logged for a first alarm, which discards the batch and reruns the start-up test."""
        return self._text("the batch being drawn was discarded and the start-up test runs again.")
