"""Offline JS/CSS assets for the maps (fetched from the npm registry at install time)."""

from __future__ import annotations


def main() -> None:
    """Fetch the assets; a no-op until the maps work lands."""


if __name__ == "__main__":
    main()
