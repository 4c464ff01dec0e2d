"""Reading usage rows of a gateway's SQLite store, as an operator would."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text


def usage_rows(data_dir: Path, model: str) -> list[tuple[int, int, int, bool]]:
    engine = create_engine(f"sqlite:///{data_dir / 'inhouse.db'}")
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status_code, prompt_tokens, completion_tokens, stream "
                "FROM usage_records WHERE model = :m ORDER BY id"
            ),
            {"m": model},
        ).all()
    engine.dispose()
    return [(r[0], r[1], r[2], bool(r[3])) for r in rows]
