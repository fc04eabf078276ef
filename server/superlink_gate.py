"""`python -m server.superlink_gate`: Flower's SuperLink with a closed control plane and signed apps.

Flower 1.42 serves the Fleet API (SuperNodes), the Control API (`flwr run`, `flwr supernode
register`) and the Runtime API (ServerApps) from one FastAPI app, and its open-source build has
no account authentication. Every site must reach that app to join, so any site could submit its
own app (whose ClientApp would then run beside every other site's data), or register or evict
SuperNodes. This launcher runs the very same SuperLink with two listeners:

- the public one (`--public-host/--public-port`, the port sites reach) answers the Fleet API and
  the health check only; every other route is refused with 403 by a middleware put in through
  Flower's SuperLink middleware hook (`flwr.superlink.extensions.get_middleware`);
- Flower's own address (its `--host/--port`, bound to 127.0.0.1) answers everything, to the
  coordinator on the server host and to the ServerApps the SuperLink starts.

Why not a reverse proxy: the route filter needs the request path, so a proxy would have to
terminate TLS and re-encrypt, and the Fleet API's node authentication and long polls would pass
through one more hop; separating listeners inside the SuperLink keeps one TLS endpoint and
Flower's own request handling.

Apps are signed the way Flower's SuperNodes verify them (`flower-supernode --trusted-entities`,
Ed25519 over the app bundle's sha256 and a timestamp). Flower's open-source SuperLink attaches
signatures only to Flower Hub apps, so this launcher attaches the consortium's signature, written
by `claimpt server submit` into `--signatures DIR/<fab sha256>.json`, to the matching bundle. It
carries signatures only: it cannot make one, and the sites verify them with Flower's own code. A
bundle without such a file is refused: a run reaches the control API on 127.0.0.1 only through
`claimpt server submit` by the coordinator's user (the signatures directory is its state's,
0700), so another local user cannot start a ServerApp, which would find the checkpoint signing
key's path in its environment.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

PUBLIC_ROUTES = ("/v1/fleet/", "/health")


class PublicListenerGate:
    """ASGI middleware: a request that came in on the public port may reach only the Fleet API."""

    def __init__(self, app, public_port: int) -> None:
        self.app, self.public_port = app, public_port

    async def __call__(self, scope, receive, send) -> None:
        server = scope.get("server") or (None, None)
        if (
            scope["type"] == "http"
            and server[1] == self.public_port
            and not str(scope.get("path", "")).startswith(PUBLIC_ROUTES)
        ):
            await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
            await send(
                {
                    "type": "http.response.body",
                    "body": b"this port serves the Fleet API only; the control plane is local to the server",
                }
            )
            return
        await self.app(scope, receive, send)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def install(public_host: str, public_port: int, signatures: Path) -> None:
    """Patch the SuperLink in this process: the gate middleware, a second (public) listener and
    the signatures of consortium-signed bundles."""
    import uvicorn
    from flwr.superlink import extensions
    from flwr.superlink.servicer.control import control_handlers
    from starlette.middleware import Middleware

    hooked = extensions.get_middleware
    extensions.get_middleware = lambda: (Middleware(PublicListenerGate, public_port=public_port), *hooked())

    def run_on_two_listeners(app, host: str, port: int, **options) -> None:
        config = uvicorn.Config(app, host=host, port=port, **options)
        uvicorn.Server(config).run(sockets=[_listening_socket(host, port), _listening_socket(public_host, public_port)])

    uvicorn.run = run_on_two_listeners
    unsigned_fab = control_handlers.Fab

    def fab_with_signature(hash_str: str, content: bytes, verifications: dict[str, str]):
        path = signatures / f"{hash_str}.json"
        if not path.is_file():  # not submitted by `claimpt server submit`: no run, no ServerApp
            raise PermissionError(f"bundle {hash_str[:16]} carries no signature from `claimpt server submit`: refused")
        verifications = {**json.loads(path.read_text()), "valid_license": "claimpt consortium signature"}
        return unsigned_fab(hash_str, content, verifications)

    control_handlers.Fab = fab_with_signature


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--public-host", required=True)
    parser.add_argument("--public-port", type=int, required=True)
    parser.add_argument("--signatures", type=Path, required=True)
    parser.add_argument("superlink_args", nargs=argparse.REMAINDER, help="-- then flower-superlink's arguments")
    args = parser.parse_args(argv)
    install(args.public_host, args.public_port, args.signatures)
    from flwr.superlink.cli.flower_superlink import flower_superlink

    sys.argv = ["flower-superlink", *[a for a in args.superlink_args if a != "--"]]
    flower_superlink()


if __name__ == "__main__":
    main()
