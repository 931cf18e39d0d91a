"""Progress for long runs, on stderr: a bar for `check` (only on a terminal, never in CI or a
pipe) and a heartbeat for `confirm` (every HEARTBEAT_S seconds of a launch, with each rank's last
state, in every environment: a CI log that stays silent for minutes looks hung).

PLACEMENT_LINT_PROGRESS=1/0 forces the bar on/off; PLACEMENT_LINT_HEARTBEAT=S sets the heartbeat
period; PLACEMENT_LINT_QUIET silences both."""

from __future__ import annotations

import os
import sys
import time

HEARTBEAT_S = 15.0
#: the bar appears only once a run has taken this long (short runs stay silent)
BAR_AFTER_S = 0.5


def bar_enabled() -> bool:
    if os.environ.get("PLACEMENT_LINT_QUIET"):
        return False
    forced = os.environ.get("PLACEMENT_LINT_PROGRESS")
    if forced is not None:
        return forced not in ("0", "")
    return sys.stderr.isatty() and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"


class Bar:
    """`update(done, total)` redraws one stderr line; `close()` clears it."""

    def __init__(self, what: str):
        self.what = what
        self.start = time.monotonic()
        self.shown = False

    def update(self, done: int, total: int) -> None:
        if time.monotonic() - self.start < BAR_AFTER_S and done < total:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\rplacement-lint: {self.what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def heartbeat_period() -> float | None:
    if os.environ.get("PLACEMENT_LINT_QUIET"):
        return None
    try:
        return float(os.environ.get("PLACEMENT_LINT_HEARTBEAT", HEARTBEAT_S))
    except ValueError:
        return HEARTBEAT_S
