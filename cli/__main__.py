"""``python -m cli`` runs the ``wangge`` tool."""

from cli.main import app

app()
