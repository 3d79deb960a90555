"""Point lookup: which grid, community, street and district hold a point."""

from geo.lookup.service import *  # noqa: F403
