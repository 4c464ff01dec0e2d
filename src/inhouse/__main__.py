from __future__ import annotations

from inhouse.cli.main import run

run()
