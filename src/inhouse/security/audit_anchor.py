"""Checkpoints of the audit chain's head, kept outside the database.

The chain shows an edited, moved or missing entry in its middle, but not the loss of its
newest entries: whoever deletes the last ten rows leaves a shorter chain that verifies.
So at an interval the head (its sequence number and hash) is written, signed, to an
append-only file beside the database (and, when configured, to a syslog collector and a
webhook, out of reach of whoever holds the data directory). ``verify`` then checks that
the chain still reaches the latest checkpoint, with the same hash there, and names the
entries that went missing after it.

The signature is an HMAC-SM3 keyed from the server secret: someone with write access to
the database and the data directory, but not the secret, cannot write a checkpoint that
hides a deletion; they can only delete checkpoints, which the external copies record.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import constant_time, hashes, hmac

from inhouse.security.audit import AuditLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    """When it was taken, ISO 8601 UTC."""
    signature: str

    def line(self) -> str:
        fields = {"seq": self.seq, "hash": self.hash, "at": self.at, "signature": self.signature}
        return json.dumps(fields, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    ok: bool
    problem: str = ""
    checkpoint: Checkpoint | None = None
    missing: tuple[int, int] | None = None
    """The first and last sequence numbers of entries deleted after a checkpoint."""


def checkpoint_key(server_secret: bytes) -> bytes:
    mac = hmac.HMAC(server_secret, hashes.SM3())
    mac.update(b"inhouse audit checkpoint v1")
    return mac.finalize()


def _sign(key: bytes, seq: int, head_hash: str, at: str) -> str:
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(f"{seq}:{head_hash}:{at}".encode())
    return mac.finalize().hex()


class AuditAnchor:
    def __init__(
        self,
        audit: AuditLog,
        path: Path,
        server_secret: bytes,
        *,
        syslog: str | None = None,
        webhook: str | None = None,
    ) -> None:
        self._audit = audit
        self._path = path
        self._key = checkpoint_key(server_secret)
        self._syslog = syslog
        self._webhook = webhook

    def checkpoint(self, _should_stop: object = None) -> Checkpoint | None:
        """Anchor the chain's head now, unless the latest checkpoint already holds it."""
        head = self._audit.head()
        if head is None:
            return None
        latest = self.latest()
        if latest is not None and latest.seq == head.seq and latest.hash == head.hash:
            return None
        at = datetime.now(UTC).isoformat(timespec="seconds")
        checkpoint = Checkpoint(head.seq, head.hash, at, _sign(self._key, head.seq, head.hash, at))
        self._append(checkpoint)
        self._send(checkpoint)
        return checkpoint

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint whose signature holds; a forged or garbled line is skipped
        (and logged)."""
        found = None
        for checkpoint in self._read():
            if found is None or checkpoint.seq >= found.seq:
                found = checkpoint
        return found

    def check(self) -> AnchorCheck:
        """Whether the chain still reaches the latest checkpoint with the same hash there."""
        checkpoint = self.latest()
        if checkpoint is None:
            return AnchorCheck(True, "no checkpoint yet")
        head = self._audit.head()
        head_seq = head.seq if head is not None else 0
        if head_seq < checkpoint.seq:
            first = head_seq + 1
            return AnchorCheck(
                False,
                f"entries {first} to {checkpoint.seq} are missing: the checkpoint of "
                f"{checkpoint.at} covers entry {checkpoint.seq}",
                checkpoint,
                (first, checkpoint.seq),
            )
        anchored = self._audit.entry(checkpoint.seq)
        if anchored is not None and anchored.hash != checkpoint.hash:
            return AnchorCheck(
                False,
                f"entry {checkpoint.seq} is not the one the checkpoint of {checkpoint.at} "
                "signed: the chain was rewritten from there",
                checkpoint,
            )
        return AnchorCheck(True, checkpoint=checkpoint)

    def _append(self, checkpoint: Checkpoint) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, checkpoint.line().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self) -> Iterator[Checkpoint]:
        try:
            lines = self._path.read_text().splitlines()
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, start=1):
            try:
                fields = json.loads(line)
                checkpoint = Checkpoint(
                    int(fields["seq"]), str(fields["hash"]), str(fields["at"]),
                    str(fields["signature"]),
                )  # fmt: skip
            except (ValueError, KeyError, TypeError):
                log.warning("audit checkpoint line %d is unreadable; skipped", number)
                continue
            wanted = _sign(self._key, checkpoint.seq, checkpoint.hash, checkpoint.at)
            if not constant_time.bytes_eq(wanted.encode(), checkpoint.signature.encode()):
                log.warning("audit checkpoint line %d has a wrong signature; skipped", number)
                continue
            yield checkpoint

    def _send(self, checkpoint: Checkpoint) -> None:
        """Copies out of reach of the data directory; a failure is logged, never fatal."""
        message = "inhouse audit checkpoint " + checkpoint.line()
        if self._syslog:
            host, _, port = self._syslog.rpartition(":")
            handler = logging.handlers.SysLogHandler(address=(host, int(port)))
            try:
                handler.emit(logging.makeLogRecord({"msg": message, "levelno": logging.INFO}))
            finally:
                handler.close()
        if self._webhook:
            request = urllib.request.Request(
                self._webhook,
                data=checkpoint.line().encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                with _NO_REDIRECTS.open(request, timeout=5):
                    pass
            except OSError as exc:
                log.warning("sending the audit checkpoint to the webhook failed: %s", exc)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)
