"""The connection cap leaves part of the open-file limit to the rest of the server."""

from __future__ import annotations

import resource

from edgekube.api import listener


def test_cap_within_the_open_file_limit() -> None:
    assert listener.allowed_connections(1000, fd_limit=1048576) == 1000
    assert listener.allowed_connections(1000, fd_limit=1024) == 768  # a shell's default: a quarter kept
    assert listener.allowed_connections(1000, fd_limit=256) == 128  # at least 128 kept
    assert listener.allowed_connections(10, fd_limit=100) == 1  # never none
    assert listener.allowed_connections(1000, fd_limit=resource.RLIM_INFINITY) == 1000
