"""One writer per root on an object store: a lease object created with a create-only write.

``<root>/_LOCK`` holds its owner and the lease's length. The holder renews it (a write
conditional on its ETag) every third of the lease; a lease not renewed for its whole length
belongs to a dead holder and is taken over with a write conditional on the ETag that was read,
so two runs cannot both take it. Age is measured on the store's clock (the object's
``LastModified`` against the response's ``Date``), so the machines' clocks need not agree.

Before it moves the ``_LATEST`` pointer, a holder reads the lease again (``confirm``): one that
lost its lease (a pause longer than the lease, a takeover) publishes nothing.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

from .errors import LockError, PublishError
from .store import Store

log = logging.getLogger(__name__)

LOCK_OBJECT = "_LOCK"
LEASE_ENVIRONMENT = "RECJOB_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 60.0
"""How long a lease lasts unrenewed; a holder renews it every third of that."""
WAIT_POLL_SECONDS = 2.0


def lease_seconds() -> float:
    """The lease length: ``RECJOB_LEASE_SECONDS``, or one minute."""
    text = os.environ.get(LEASE_ENVIRONMENT)
    try:
        return float(text) if text else DEFAULT_LEASE_SECONDS
    except ValueError:
        raise PublishError(f"{LEASE_ENVIRONMENT}: expected a number of seconds, got {text!r}") from None


def _age_seconds(response: dict[str, Any]) -> float:
    """Seconds since the object was last written, on the store's clock."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    now = parsedate_to_datetime(headers["date"]) if "date" in headers else None
    if now is None:
        return 0.0
    return (now - response["LastModified"]).total_seconds()


class StoreLock:
    """The lease on ``<root>/_LOCK`` for the duration of a ``with`` block."""

    def __init__(self, root: Store, wait: bool = False, advice: str = "wait for it to finish or pass --wait",
                 note: dict[str, str] | None = None) -> None:
        self.root = root
        self.note = dict(note or {})
        """Written beside the owner for others to read (a scoring run names the bundle it reads)."""
        self.wait = wait
        self.advice = advice
        self.lease = lease_seconds()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._etag: str | None = None
        self._lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "lease_seconds": self.lease,
                           "renewed_at": time.time(),
                           "note": self.note}).encode()

    def __enter__(self) -> "StoreLock":
        while True:
            etag = self.root.put_conditional(LOCK_OBJECT, self._body(), None)
            if etag is not None:
                break
            body, held, response = self.root.read_tagged(LOCK_OBJECT)
            if body is None:
                continue   # released between the two requests
            holder = _holder(body)
            age = _age_seconds(response)
            if age > float(holder.get("lease_seconds", self.lease)):
                etag = self.root.put_conditional(LOCK_OBJECT, self._body(), held)
                if etag is not None:
                    log.warning("%s: took over the lease of %s, not renewed for %.0f s (its run died); what it "
                                "left unfinished is removed", self.root.uri_of(LOCK_OBJECT),
                                holder.get("owner", "unknown"), age)
                    break
                continue
            if not self.wait:
                raise LockError(f"{self.root.uri_of(LOCK_OBJECT)}: another run ({holder.get('owner', 'unknown')}) "
                                f"holds this root's lease, renewed {age:.0f} s ago; {self.advice}")
            time.sleep(WAIT_POLL_SECONDS)
        self._etag = etag
        self._renewer = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            with self._guard:
                etag = self.root.put_conditional(LOCK_OBJECT, self._body(), self._etag)
                if etag is None:
                    self._lost = True
                    log.error("%s: this run's lease was taken over; it will publish nothing",
                              self.root.uri_of(LOCK_OBJECT))
                    return
                self._etag = etag

    def confirm(self) -> None:
        """PublishError unless this run still holds the lease, read from the store now."""
        with self._guard:
            _body, etag, _ = self.root.read_tagged(LOCK_OBJECT)
            if self._lost or etag != self._etag:
                raise PublishError(f"{self.root.uri_of(LOCK_OBJECT)}: this run lost its lease (not renewed within "
                                   f"{self.lease:g} s, and taken over); nothing was published")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._guard:
            if self._lost or self._etag is None:
                return
            try:
                _body, etag, _ = self.root.read_tagged(LOCK_OBJECT)
                if etag == self._etag:
                    self.root.delete(LOCK_OBJECT)
            except Exception as error:  # noqa: BLE001 - the lease expires by itself; never hide the run's outcome
                log.warning("%s: lease not released (%s); it expires in %g s", self.root.uri_of(LOCK_OBJECT),
                            error, self.lease)


def _holder(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}
