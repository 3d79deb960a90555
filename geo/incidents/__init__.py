"""Incidents: intake and routing, the six-step loop (六步接办), SLAs, queries and statistics."""

from geo.incidents.service import *  # noqa: F403
