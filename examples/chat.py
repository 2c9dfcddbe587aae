"""A tiny terminal chat on Messenger's Python client library (clients/python, docs/clients.md).

    python examples/chat.py --user alice --to bob [--host 127.0.0.1 --port 1884] [--token T]

Each line you type is sent to ``--to`` as a message; incoming messages and events are printed,
and messages shown are marked read. The library does the rest: it reconnects when the connection
drops, catches up on what arrived meanwhile (each message once, in order), resends unanswered
messages with the same id (stored once), and announces this device's presence.

The token comes from ``--token``, else ``$MESSENGER_TOKEN``, else ``messenger token issue USER``
(the development secret, as ``messenger serve`` uses by default; asked again before it
expires). Ctrl-D (end of input) waits for the acks and quits; Ctrl-C quits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import threading
import uuid
from pathlib import Path

try:
    from messenger_client import (
        Ack,
        AuthError,
        Client,
        CommandError,
        Connected,
        ConnectError,
        Disconnected,
        Message,
        Presence,
        ReadReceipt,
        SendError,
        SendTimedOut,
        TipFailed,
        TokenProvider,
        Typing,
    )
except ImportError:  # `make serve` installs the server only
    sys.exit("chat: needs the Python client library: .venv/bin/pip install -e clients/python")

ACK_WAIT_S = 10.0


def token_provider(user: str, fixed: str | None) -> TokenProvider:
    """``get_token`` for the client: the given token, or a fresh development token each time."""
    if fixed:

        async def given() -> str:
            return fixed

        return given

    async def issue() -> str:
        command = shutil.which("messenger") or str(Path(sys.executable).with_name("messenger"))
        try:
            process = await asyncio.create_subprocess_exec(
                command,
                "token",
                "issue",
                user,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RuntimeError(f"no --token or MESSENGER_TOKEN, and {command} did not start: {exc}") from exc
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"`messenger token issue {user}` failed: {err.decode().strip()}")
        return out.decode().strip()

    return issue


def show(event: object, chat: Client) -> None:
    """Print one event; mark a message shown as read."""
    match event:
        case Message(id=message_id, sender=sender, body=body):
            print(f"[{message_id}] {sender}: {body}", flush=True)
            chat.mark_read(message_id, peer=sender)
        case Ack(id=message_id, duplicate=duplicate, status=status):
            note = " (again)" if duplicate else ""
            print(f"  {status} #{message_id}{note}", flush=True)
        case CommandError(code=code, detail=detail):
            print(f"  ! {code}: {detail}", flush=True)
        case TipFailed(billing_url=url):
            print(f"  ! tip declined: fix your payment method at {url}", flush=True)
        case ReadReceipt(by=by, up_to=up_to):
            print(f"  {by} read up to #{up_to}", flush=True)
        case Typing(sender=sender):
            print(f"  {sender} is typing...", flush=True)
        case Presence(user=user, device=device, online=online, retained=retained):
            if online or not retained:  # a device that went away long ago is no news
                print(f"  {user} is {'online' if online else 'offline'} ({device})", flush=True)
        case Disconnected(reason=reason, retry_in=retry_in):
            print(f"  (connection lost: {reason}; retrying in {retry_in:.1f}s)", flush=True)
        case Connected(reconnect=True):
            print("  (reconnected)", flush=True)
        case SendTimedOut(client_id=client_id):
            print(f"  ! no answer for {client_id} yet", flush=True)


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines typed (None at end of input), read by a daemon thread: input() blocks, and a
    thread blocked in it must not keep the program from exiting on Ctrl-C."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


async def chat(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("MESSENGER_TOKEN")
    client = Client(
        args.user,
        token_provider(args.user, token),
        host=args.host,
        port=args.port,
        api_url=args.api_url,
        device=f"chat-{uuid.uuid4().hex[:8]}",
    )
    try:
        await client.start()
    except (ConnectError, AuthError) as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    client.watch_presence(args.to)
    print(
        f"{args.user} -> {args.to} on {args.host}:{args.port} (device {client.device}); Ctrl-D quits",
        flush=True,
    )

    async def printer() -> None:
        async for event in client.events():
            show(event, client)

    printing = asyncio.create_task(printer())
    sent = []
    lines = stdin_lines(asyncio.get_running_loop())
    while (line := await lines.get()) is not None:
        if line.strip():
            sent.append(client.send(args.to, line))

    status = 0
    try:
        async with asyncio.timeout(ACK_WAIT_S):
            outcomes = await asyncio.gather(*(o.wait() for o in sent), return_exceptions=True)
        if failed := [o for o in outcomes if isinstance(o, SendError)]:
            print(f"chat: {len(failed)} message(s) not sent: {failed[0]}", file=sys.stderr)
            status = 1
    except TimeoutError:
        print("chat: some messages were not acknowledged yet", file=sys.stderr)
        status = 1
    await client.close()
    await printing
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description="Terminal chat on Messenger's Python client library.")
    parser.add_argument("--user", required=True, help="who you are (the token's subject)")
    parser.add_argument("--to", required=True, help="who you talk to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1884)
    parser.add_argument(
        "--api-url", default="http://127.0.0.1:8080", help="the REST API (default: %(default)s)"
    )
    parser.add_argument("--token", help="bearer token (default: $MESSENGER_TOKEN, else a dev token)")
    args = parser.parse_args()
    try:
        return asyncio.run(chat(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
