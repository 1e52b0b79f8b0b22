"""Silence Prophet's and cmdstanpy's chatty INFO logs (two lines per fit otherwise)."""
from __future__ import annotations

import logging

_done = False


def quiet_prophet() -> None:
    """Call before fitting; importing prophet makes cmdstanpy install its own INFO handler."""
    global _done
    if _done:
        return
    # prophet.plot logs an ERROR at import when plotly is missing (we do not plot with it)
    logging.getLogger("prophet.plot").disabled = True
    import prophet  # noqa: F401  (triggers cmdstanpy's logger set-up first)

    for name in ("cmdstanpy", "prophet", "prophet.plot", "prophet.forecaster", "prophet.models"):
        logging.getLogger(name).disabled = True
    _done = True
