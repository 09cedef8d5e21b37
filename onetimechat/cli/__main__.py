"""`python -m onetimechat.cli`: the same as `otc`."""

from onetimechat.cli import run

run()
