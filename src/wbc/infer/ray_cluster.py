"""Reaching a Ray cluster the way a user starts one: `ray start --head`, token authentication on.

Ray 2.5x enables token authentication on a cluster whose head finds a token (~/.ray/auth_token,
made by `ray get-auth-token --generate` or by any earlier local `ray.init()`). A driver that names
the head's address explicitly does not send that token unless RAY_AUTH_MODE=token is set, and
the failure is 20-30 s of repeated `InvalidAuthToken` lines. So before `ray.init` wbc:

1. reaches the address over TCP (3 s): a head that is down or a wrong port is one line at once;
2. finds this machine's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) and, unless
   RAY_AUTH_MODE says otherwise, turns token mode on for this process, as Ray itself does for
   `address="auto"`;
3. asks the cluster one authenticated question (the GCS for HOST:PORT, the Ray Client server for
   ray://HOST:10001), so a missing or wrong token is one line naming the fix, in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from wbc.errors import WbcError

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_FIX = ("copy the head node's token to this machine: run `ray get-auth-token` on the head and put what it prints in "
             "~/.ray/auth_token here (or export RAY_AUTH_TOKEN=...); every worker node needs it too")


@dataclass
class Address:
    text: str
    host: str
    port: int
    client: bool  # ray://HOST:PORT (Ray Client) rather than the head's GCS HOST:PORT

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")


def parse_address(address: str) -> Address:
    """HOST:PORT or ray://HOST[:PORT] (Ray Client, port 10001 by default)."""
    text = address.strip()
    client = text.startswith("ray://")
    rest = text[len("ray://"):] if client else text
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, "10001" if client else ""
    if not host or not port.isdigit():
        raise WbcError(f"--address '{address}': write HOST:PORT (the head's `ray start --head --port PORT`) or ray://HOST:10001")
    return Address(text, host.strip("[]"), int(port), client)


def local_token() -> tuple[str | None, str]:
    """(this machine's Ray token or None, where it came from), in Ray's own order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    for where in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if where and Path(where).is_file():
            text = Path(where).read_text().strip()
            if text:
                return text, where
    return None, ""


def enable_token_mode() -> None:
    """Token mode for this process and the processes it starts (what Ray does for address="auto")."""
    os.environ[AUTH_MODE] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")  # Ray caches its configuration: make it read the mode again
    except (ImportError, AttributeError):
        pass


def reachable(addr: Address, timeout: float = 3.0) -> None:
    try:
        with socket.create_connection((addr.host, addr.port), timeout=timeout):
            return
    except OSError as e:
        why = e.strerror or type(e).__name__
    start = "`ray start --head` (its Ray Client server listens on 10001)" if addr.client else f"`ray start --head --port {addr.port}`"
    raise WbcError(f"cannot reach a Ray head at {addr.host}:{addr.port} ({why.lower() if why else 'timed out'}): is the cluster up? "
                   f"Start one there with {start}, or check --address")


@contextlib.contextmanager
def _quiet_stderr():
    """Ray's C++ client writes its own retry lines to file descriptor 2: hide them during the probe."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _refused(addr: Address, token: str | None, where: str) -> WbcError:
    if token:
        return WbcError(f"the Ray cluster at {addr.host}:{addr.port} refused this machine's token (from {where}): it is not the "
                        f"head's; {TOKEN_FIX}")
    return WbcError(f"the Ray cluster at {addr.host}:{addr.port} uses token authentication and this machine has no token; {TOKEN_FIX}")


def check_auth(addr: Address, token: str | None, where: str) -> None:
    """One authenticated request with a short timeout: a missing or wrong token says so at once."""
    if addr.client:
        import grpc
        import ray.core.generated.ray_client_pb2 as pb
        import ray.core.generated.ray_client_pb2_grpc as pbg

        meta = [("authorization", f"Bearer {token}")] if token and os.environ.get(AUTH_MODE) == "token" else []
        with grpc.insecure_channel(f"{addr.host}:{addr.port}") as ch:
            try:
                pbg.RayletDriverStub(ch).ClusterInfo(pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING), timeout=5, metadata=meta)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise _refused(addr, token, where) from None
                raise WbcError(f"{addr.text} answers but not as a Ray Client server ({e.code().name}): "
                               "the head's Ray Client port is 10001 unless `ray start --ray-client-server-port` changed it") from None
        return
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        with _quiet_stderr():
            GcsClient(address=f"{addr.host}:{addr.port}").internal_kv_get(b"wbc-probe", None, timeout=5)
    except AuthenticationError:
        raise _refused(addr, token, where) from None
    except Exception as e:  # a port that is not a Ray head's, or a head still starting
        raise WbcError(f"{addr.host}:{addr.port} answers but not as a Ray head ({str(e).splitlines()[0][:120]}): "
                       f"pass the port given to `ray start --head --port`") from None


def prepare(address: str) -> Address:
    """Everything a driver needs before `ray.init(address)`: reachable, token found and sent, accepted."""
    addr = parse_address(address)
    reachable(addr)
    token, where = local_token()
    if token and os.environ.get(AUTH_MODE) is None:
        enable_token_mode()
    check_auth(addr, token, where)
    return addr
