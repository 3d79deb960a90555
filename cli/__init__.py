"""The ``wangge`` command-line tool: the composition root that wires geo/, api/ and maps/."""
