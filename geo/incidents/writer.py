"""The report writer: reports submitted from many threads or requests filed in shared
transactions (one commit and one pooled connection serve many reports under load)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy.engine import Engine

from geo.incidents.intake import ReportResult, file_reports
from geo.incidents.settings import IncidentSettings


class ReportWriter:
    """Files reports submitted from many threads or requests in shared transactions.

    ``threads`` writer threads each take every report waiting (up to ``max_batch``) and file
    them together (``file_reports``): under load, one commit and one pooled connection serve
    many reports; alone, a report is filed at once. ``submit`` returns a Future resolved after
    the commit.
    """

    def __init__(self, engine: Engine, settings: IncidentSettings, *, threads: int = 4,
                 max_batch: int = 32) -> None:
        self.engine, self.settings, self.max_batch = engine, settings, max_batch
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], Future[ReportResult]] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name=f"report-writer-{i}",
                                          daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, **report_args: Any) -> Future[ReportResult]:
        """Queue one report (``report``'s keyword arguments, without conn and settings)."""
        future: Future[ReportResult] = Future()
        self._queue.put((report_args, future))
        return future

    def close(self) -> None:
        """Stop the writer threads once the queued reports are filed."""
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # leave the stop signal for this thread's next turn
                    break
                batch.append(more)
            # A caller that gave up before its report was taken (cancelled) is not filed: it
            # was never acknowledged. From here on, a future can no longer be cancelled.
            batch = [(args, f) for args, f in batch if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                results = file_reports(self.engine, [args for args, _ in batch],
                                       settings=self.settings)
            except Exception as exc:  # every waiting caller must hear of it
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
