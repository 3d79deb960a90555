"""Planning: grid boundary changes, checks, code numbering, drafts and diffs."""

from geo.planning.service import *  # noqa: F403
