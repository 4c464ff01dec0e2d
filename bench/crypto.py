"""Encryption at rest: what SM4-GCM costs, and what it adds on the request path.

Two tables, one run:

1. ``seal``: sealing and opening one value (``Keyring.encrypt``/``decrypt``: SM4-GCM or
   AES-256-GCM, with the header and context as associated data) for values of 256 B,
   1 KiB and 32 KiB, in µs per value and MB/s; the ratio is SM4's time over AES's.
2. ``metering``: what each inference costs the usage writer (``UsageRecorder.flush``
   writing batches of 500 to SQLite, as the gateway does off the request path): usage
   rows only (audit off); with an audit entry per request whose details are stored in
   plain text (a keyring that does not encrypt: the baseline, built here only); with
   details sealed by SM4-GCM (the default) or AES-256-GCM. The ratio is each row's time
   over the plain-text audit's: the encryption's own share of the hot path's writes.

Run it with the project's virtual environment::

    .venv/bin/python bench/crypto.py             # about 20 s
    .venv/bin/python bench/crypto.py --records 5000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from inhouse.config import CipherAlgorithm, MeteringSettings
from inhouse.security.audit import AuditLog
from inhouse.security.key_provider import MasterKey
from inhouse.security.keyring import Keyring
from inhouse.store.db import Database
from inhouse.store.migrate import upgrade_to_head
from inhouse.tenancy.metering import UsageEvent, UsageRecorder

MASTER = MasterKey(os.urandom(32), "bench")
SIZES = (256, 1024, 32 * 1024)
BATCH = 500


class PlaintextKeyring(Keyring):
    """The baseline only: stores values as they are (no encryption)."""

    def encrypt(self, plaintext: str | bytes, context: str) -> str:
        return plaintext if isinstance(plaintext, str) else plaintext.decode()


def time_seal_and_open(keyring: Keyring, value: bytes, count: int) -> float:
    """Seconds per value to seal and open ``value``."""
    started = time.perf_counter()
    for n in range(count):
        keyring.decrypt(keyring.encrypt(value, f"bench:{n}"), f"bench:{n}")
    return (time.perf_counter() - started) / count


def seal_table(db: Database, repeat: int) -> list[list[str]]:
    rows = []
    keyrings = {alg: Keyring(db, MASTER, alg) for alg in CipherAlgorithm}
    for size in SIZES:
        value = os.urandom(size)
        count = max(200, 2_000_000 // size)
        per_value: dict[CipherAlgorithm, float] = {}
        for algorithm, keyring in keyrings.items():
            keyring.rotate()  # its own current key of this algorithm
            per_value[algorithm] = min(
                time_seal_and_open(keyring, value, count) for _ in range(repeat)
            )
        sm4, aes = per_value[CipherAlgorithm.SM4_GCM], per_value[CipherAlgorithm.AES_256_GCM]
        rows.append(
            [
                f"{size:,} B",
                f"{sm4 * 1e6:.1f}",
                f"{size / sm4 / 1e6:.0f}",
                f"{aes * 1e6:.1f}",
                f"{size / aes / 1e6:.0f}",
                f"{sm4 / aes:.2f}\u00d7",
            ]
        )
    return rows


def event(n: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{n:09d}",
        created_at=datetime.now(UTC),
        tenant_id="ten_bench",
        key_id="key_bench",
        model="qwen-center",
        endpoint="chat.completions",
        stream=False,
        status_code=200,
        prompt_tokens=31,
        completion_tokens=128,
        latency_ms=812.4,
        model_version="mdl_0123456789abcdef",
        node="gpu-1:8000",
    )


def metering_run(workdir: Path, label: str, keyring_kind: str | None, records: int) -> float:
    """Seconds per record to write ``records`` usage events (and audit entries)."""
    db = Database(f"sqlite:///{workdir / (label + '.db')}")
    upgrade_to_head(db.engine)
    audit = None
    if keyring_kind == "plain":
        audit = AuditLog(db, b"b" * 32, PlaintextKeyring(db, MASTER, CipherAlgorithm.SM4_GCM))
    elif keyring_kind is not None:
        audit = AuditLog(db, b"b" * 32, Keyring(db, MASTER, CipherAlgorithm(keyring_kind)))
    recorder = UsageRecorder(db, MeteringSettings(batch_size=BATCH), audit=audit)

    async def write_all() -> float:
        started = time.perf_counter()
        for first in range(0, records, BATCH):
            for n in range(first, min(first + BATCH, records)):
                recorder.record(event(n))
            await recorder.flush()
        return (time.perf_counter() - started) / records

    seconds = asyncio.run(write_all())
    db.dispose()
    return seconds


def metering_table(records: int, repeat: int) -> list[list[str]]:
    variants = [
        ("usage only (audit off)", None),
        ("+ audit, details in plain text (baseline)", "plain"),
        ("+ audit, details sealed SM4-GCM (default)", CipherAlgorithm.SM4_GCM.value),
        ("+ audit, details sealed AES-256-GCM", CipherAlgorithm.AES_256_GCM.value),
    ]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, kind) in enumerate(variants):
            results[label] = min(
                metering_run(Path(tmp), f"{index}-{attempt}", kind, records)
                for attempt in range(repeat)
            )
    baseline = results[variants[1][0]]
    return [
        [label, f"{seconds * 1e6:.1f}", f"{1 / seconds:,.0f}", f"{seconds / baseline:.2f}\u00d7"]
        for label, seconds in results.items()
    ]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000, help="usage records per variant")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the best counts")
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'keys.db'}")
        upgrade_to_head(db.engine)
        seal = seal_table(db, args.repeat)
        db.dispose()
    print_table(
        "seal + open one value (best of runs)",
        ["value", "SM4-GCM µs", "SM4 MB/s", "AES-GCM µs", "AES MB/s", "SM4/AES"],
        seal,
    )
    rows = metering_table(args.records, args.repeat)
    print_table(
        f"usage writer, SQLite, batches of {BATCH}: per inference request",
        ["variant", "µs/request", "requests/s", "vs plain-text audit"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
