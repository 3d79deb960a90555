"""Service circles (5分钟服务圈): network search, circle geometry, runs, coverage, siting."""
