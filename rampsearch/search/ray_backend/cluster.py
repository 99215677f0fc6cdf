"""Joining a running Ray cluster (`--address`): fail fast when nothing answers, and match its token authentication."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import ray
from ray.exceptions import AuthenticationError

from ...errors import UserError

# A reachable Ray head accepts a TCP connection in milliseconds; ray.init would retry for minutes.
CONNECT_TIMEOUT_S = 5.0


# -- Ray's authentication internals ---------------------------------------------------------------
# A driver must use token authentication exactly when its cluster does: with a token against a
# cluster without authentication, the driver demands tokens that the cluster's workers never send,
# so every trial dies within seconds; without one against a cluster that requires it, nothing
# connects. Ray 2.60 has no public way to ask a cluster which it is, and reads RAY_AUTH_MODE only
# when imported. The probe script and `_use_auth_mode` are the only code that touches `ray._raylet`;
# tests/test_faults_ray.py runs them against real clusters with and without token authentication.

# Exit statuses of _AUTH_PROBE.
CLUSTER_OPEN, TOKEN_ACCEPTED, TOKEN_REJECTED, NO_TOKEN = 0, 3, 4, 5
# Asks the cluster's GCS at argv[1] for its id, first without a token, then with this machine's
# (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). A process of its own, since Ray's
# auth mode is process-wide and its client logs every refusal to stderr.
_AUTH_PROBE = f"""
import os, sys
from ray._raylet import AuthenticationTokenLoader, Config, GcsClient
from ray.exceptions import AuthenticationError

def answers():
    try:
        GcsClient(address=sys.argv[1])
    except AuthenticationError:
        return False
    return True

if answers():
    sys.exit({CLUSTER_OPEN})
if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
    sys.exit({NO_TOKEN})
os.environ["RAY_AUTH_MODE"] = "token"
Config.initialize("")
sys.exit({TOKEN_ACCEPTED} if answers() else {TOKEN_REJECTED})
"""
# The probe spends about a second importing Ray, and a cluster's GCS answers in milliseconds.
# Something else listening at the address never answers (Ray's client gives up after 40 s); then
# the probe is abandoned and ray.init's own error says what is wrong.
AUTH_PROBE_TIMEOUT_S = 20.0


def _probe_auth(address: str) -> int | None:
    """How the cluster at HOST:PORT `address` authenticates this machine (an exit status of _AUTH_PROBE), or None."""
    try:
        probe = subprocess.run([sys.executable, "-c", _AUTH_PROBE, address], capture_output=True,
                               env={**os.environ, "RAY_AUTH_MODE": "disabled"}, timeout=AUTH_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    known = (CLUSTER_OPEN, TOKEN_ACCEPTED, TOKEN_REJECTED, NO_TOKEN)
    return probe.returncode if probe.returncode in known else None


def _use_auth_mode(mode: str) -> None:
    """From the next ray.init on, this process's Ray (and the processes it starts) use auth mode `mode`:
    "token" or "disabled"."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray rereads its environment, as it does itself when it turns token mode on


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT or ray://HOST:PORT address; None for 'auto' (Ray's to find)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if sep and port.isdigit() else None


def _check_reachable(address: str, host_port: tuple[str, int]) -> None:
    """Fail fast, naming the address, when nothing listens there."""
    try:
        socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}). Start one "
                        "on that machine with `ray start --head`, or pass --address auto on a node of a running "
                        "cluster") from None


def _match_cluster_auth(address: str) -> None:
    """Use token authentication exactly when the cluster at HOST:PORT `address` does, or say why it cannot be joined.

    A token left in ~/.ray/auth_token by an earlier `ray start` says nothing about this cluster.
    """
    status = _probe_auth(address)
    if status == NO_TOKEN:
        raise UserError(f"--address {address}: that Ray cluster requires token authentication and this machine has "
                        "no token; put the cluster's token (`ray get-auth-token` on its head node) in "
                        "~/.ray/auth_token or RAY_AUTH_TOKEN")
    if status == TOKEN_REJECTED:
        raise UserError(f"--address {address}: that Ray cluster rejects this machine's auth token (from "
                        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); use the cluster's own, which "
                        "`ray get-auth-token` prints on its head node")
    if status is not None:
        _use_auth_mode("token" if status == TOKEN_ACCEPTED else "disabled")


def connect(address: str) -> None:
    """Join a running cluster, or say clearly why not."""
    host_port = _host_port(address)
    if host_port:
        _check_reachable(address, host_port)
        if not address.startswith("ray://"):  # Ray Client answers on its own port, not the GCS's
            _match_cluster_auth(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, AuthenticationError) as exc:
        raise UserError(f"--address {address}: could not join a Ray cluster there ({exc}). Start one with "
                        "`ray start --head`, or pass 'auto' on a cluster node; with 'auto', a cluster with token "
                        "authentication needs its token in ~/.ray/auth_token or RAY_AUTH_TOKEN") from None
