"""Which of the gateway's environment variables a model entry or a node may send upstream.

A model entry names the variable that holds its upstream's key (``--api-key-env``), a
node the one that holds its token (``--token-env``). Both are rows in the database, so
someone who can write to it could otherwise point an entry at any variable of the
gateway's process (a cloud credential, the database password) and at a server of their
own. Only these names are ever read and sent: ``INHOUSE_UPSTREAM_*``,
``INHOUSE_NODE_TOKEN`` and ``INHOUSE_NODE_TOKEN_*``, and the names the operator lists in
``INHOUSE_GATEWAY__SECRET_VARIABLES``. The rule is checked when an entry is created and
again each time a variable is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from inhouse.errors import InvalidRequestError

ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ALLOWED_PREFIXES = ("INHOUSE_UPSTREAM_", "INHOUSE_NODE_TOKEN_")
_ALLOWED_NAMES = frozenset({"INHOUSE_NODE_TOKEN"})


class SecretVariables:
    def __init__(self, configured: Iterable[str] = ()) -> None:
        self._configured = frozenset(configured)

    def allowed(self, name: str) -> bool:
        return bool(ENV_VAR_NAME.match(name)) and (
            name in _ALLOWED_NAMES or name.startswith(_ALLOWED_PREFIXES) or name in self._configured
        )

    def check(self, name: str, *, param: str) -> str:
        """``name``, if it may be sent upstream; 400 naming the rule if not."""
        if not ENV_VAR_NAME.match(name):
            raise InvalidRequestError(f"invalid variable name {name!r}", param=param)
        if not self.allowed(name):
            raise InvalidRequestError(
                f"{name} may not be sent upstream: use an INHOUSE_UPSTREAM_* or "
                "INHOUSE_NODE_TOKEN* variable, or list it in INHOUSE_GATEWAY__SECRET_VARIABLES",
                param=param,
            )
        return name

    def read(self, name: str) -> str | None:
        """The variable's value, stripped; None when unset or empty. Checked again here: a
        name read back from the store is never trusted."""
        if not self.allowed(name):
            return None
        value = os.environ.get(name, "").strip()
        return value or None
