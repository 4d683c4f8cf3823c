"""The worker's triage of an event message: decided in the consumer's receive thread, with no job slot and no
backend call, so that redundant events never wait behind thumbnail jobs (and never pile up in the queue).

Under ``run`` the hand-over thumbnails each upload of this agent at once; the S3 event that follows is redundant.
It is either done already (the journal holds the source's ETag: delete it) or in the hand-over's hands (wait for
that job, outside the job pool, then decide again). Anything else is a job, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from agent.cloud.events import parse_body
from agent.config.model import Config
from agent.errors import BadMessageError
from agent.pipeline.keys import Layout
from agent.state.status import Status

# source rel -> done when the hand-over job making it ends, or None (``Handoff.pending``).
InHand = Callable[[str], "Future[str] | None"]


class WorkerTriage:
    """The triage half of ``ThumbnailWorker`` (a mixin: the worker's attributes below are its own)."""

    cfg: Config
    layout: Layout
    status: Status
    in_hand: InHand | None  # set by the agent when it runs a hand-over
    journal_done: Callable[[str, str], bool]

    def triage(self, msg: dict[str, Any]) -> bool | Future[str] | None:
        """True when every record of ``msg`` is a source this worker has thumbnailed (same ETag); the hand-over's
        Future when one of them is being made in this process and the rest are done; None otherwise (a job:
        a foreign bucket, a removal, an unknown key or a body that is no S3 event)."""
        try:
            events = parse_body(str(msg.get("Body", "")))
        except BadMessageError:
            return None
        if not events:
            return True  # s3:TestEvent: nothing to do (the handler would only delete it too)
        for event in events:
            if event.bucket != self.cfg.source.bucket or not event.created or not event.etag:
                return None
            rel = self.layout.rel_of_source_key(event.key)
            if rel is None:
                return None
            # The hand-over first: its job writes the journal before it lets go, so a job that ends between the
            # two looks is seen as done, never as neither.
            making = self.in_hand(rel) if self.in_hand is not None else None
            if making is not None:
                return making
            if not self.journal_done(event.key, event.etag):
                return None
        for _event in events:
            self.status.count("skipped")  # as the handler counts each record it finds done
        return True
