"""Static bearer tokens from a CSV file, as kube-apiserver's `--token-auth-file`.

Each line is `token,user,uid[,"group1,group2"]` (at least three columns; the fourth, quoted,
holds the groups separated by commas). A line with an empty token is skipped; a token given
twice keeps its last line; a file that cannot be read or has a short line stops the boot with
the file and the line named. The file is read once, at boot, as upstream reads it.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from edgekube.api.auth import user as user_mod

log = logging.getLogger(__name__)


class TokenFileError(OSError):
    pass


class TokenFile:
    """A `TokenAuthenticator` over the tokens of one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens: dict[str, user_mod.UserInfo] = {}
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first token
        except OSError as exc:
            raise TokenFileError(f"token file {path}: {exc.strerror or exc}") from None
        for number, record in enumerate(csv.reader(text.splitlines()), start=1):
            if not record:
                continue
            if len(record) < 3:
                raise TokenFileError(f"token file '{path}' must have at least 3 columns (token, user name, user uid), "
                                     f"found {len(record)} on line {number}")
            token, name, uid = record[0], record[1], record[2]
            if not token:
                log.warning("empty token has been found in token file '%s', record number '%d'", path, number)
                continue
            if token in self._tokens:
                log.warning("duplicate token has been found in token file '%s', record number '%d'", path, number)
            groups = record[3].split(",") if len(record) >= 4 else []
            self._tokens[token] = user_mod.authenticated(name, groups=groups, uid=uid)

    def authenticate_token(self, token: str) -> user_mod.UserInfo | None:
        return self._tokens.get(token)
