"""What ``newswatch run`` runs beside the pipeline: the story alert printer and the notifier.

The order of a run is: `RunCompanion` built (a bad route fails before any broker
starts) → topics created → `start` (the printer takes the story-alerts topic's
end as its starting point; the notifier joins its consumer group) → connectors
and pipeline → `end`. With ``drain`` (``--until-idle`` that was not
interrupted) the printer prints, and the notifier delivers and commits, what
the topics hold at that moment, then both exit; otherwise both stop at once,
the notifier leaving whatever it has not delivered for the next start. The
caller stops the broker only after `end`, so no Kafka client outlives it.
"""

from __future__ import annotations

import logging
import threading

from newswatch.config import Settings
from newswatch.signals import stop_on_signals
from notifiers.commands import STOPPING
from notifiers.console import StoryAlertPrinter
from notifiers.service import NotifierService, NotifyReport

__all__ = ["RunCompanion"]

logger = logging.getLogger(__name__)


class RunCompanion:
    """The printer, and the notifier when routes (or ``--notify-webhook``) are configured."""

    def __init__(self, settings: Settings, as_json: bool = False) -> None:
        self.settings = settings
        notify = settings.notify
        self.notifier = NotifierService(settings) if notify.routes or notify.webhook else None
        self.printer = StoryAlertPrinter(settings, as_json=as_json)
        self._stop = threading.Event()
        self._finish = threading.Event()
        self._thread: threading.Thread | None = None
        self._report: NotifyReport | None = None
        self._failure: BaseException | None = None
        self._ended = False

    def start(self) -> None:
        self.printer.start()
        if self.notifier is not None:
            self._thread = threading.Thread(target=self._notify, name="notifier", daemon=True)
            self._thread.start()

    def _notify(self) -> None:
        assert self.notifier is not None
        try:
            self._report = self.notifier.run(self._stop, self._finish)
        except BaseException as exc:  # reported by end()
            self._failure = exc
            logger.exception("notifier failed")

    def end(self, drain: bool) -> str:
        """Finish (``drain``) or stop both; the summary to append to the run's line.

        While draining, a first SIGINT/SIGTERM stops the notifier (undelivered
        alerts stay for the next start) and a second one exits at once.

        Raises:
            BaseException: what the notifier failed with, if it failed.
        """
        if self._ended:
            return ""
        self._ended = True
        if drain:
            self.printer.finish()
            self._finish.set()
            restore = stop_on_signals(self._stop, STOPPING, logger=logger)
            try:
                self.printer.join()
                if self._thread is not None:
                    self._thread.join()
            finally:
                restore()
        else:
            self.printer.stop()
            self._stop.set()
            self.printer.join(timeout=10)
            if self._thread is not None:
                self._thread.join()
        if self._failure is not None:
            raise self._failure
        printed = self.printer.printed
        tail = f"; {printed} story alert{'' if printed == 1 else 's'}"
        if self._report is not None:
            tail += f"; {self._report.summary()}"
        return tail
