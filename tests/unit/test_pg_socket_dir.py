"""The embedded cluster's Unix socket folder stays within the kernel's 107-byte socket path."""
from __future__ import annotations

import os

from core.procs import unix_socket_path
from stack.pgcluster import socket_dir


def test_a_short_data_folder_keeps_its_socket_beside_it(tmp_path):
    data = tmp_path / "pg" / "data"
    assert socket_dir(data) == (tmp_path / "pg" / "data.sock").resolve()


def test_a_deep_data_folder_gets_a_short_stable_socket_folder(tmp_path):
    data = tmp_path / ("deep-checkout-" * 8) / ".run" / "postgres" / "data"
    got = socket_dir(data)
    assert len(os.fsencode(str(got / ".s.PGSQL.65535"))) <= 107
    assert got == socket_dir(data)  # the same cluster always finds the same folder
    assert got != socket_dir(data.parent / "replica")  # and two clusters never share one
    assert got.name.startswith("opsstack-")


def test_any_socket_path_that_is_too_long_is_shortened(tmp_path):
    short = tmp_path / "f2b.sock"
    assert unix_socket_path(short) == short
    deep = tmp_path / ("x" * 120) / "fail2ban.sock"
    got = unix_socket_path(deep)
    assert len(os.fsencode(str(got))) <= 107 and got.name.endswith("fail2ban.sock") and got == unix_socket_path(deep)
