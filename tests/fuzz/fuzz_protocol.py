"""Fuzz target of the MQTT protocol decoder (messenger/protocol.py), for atheris (libFuzzer).

    make fuzz                                   # FUZZ_RUNS=100000 by default
    python tests/fuzz/fuzz_protocol.py -runs=1000000 -dict=tests/fuzz/protocol.dict \\
        var/fuzz/protocol tests/fuzz/corpus/protocol

atheris comes with the ``fuzz`` extra (``pip install -e '.[fuzz]'``). The first corpus folder
collects what libFuzzer finds (var/ is not committed); ``tests/fuzz/corpus/protocol`` holds the
seeds. A crash is written as ``crash-<sha1>``: replay it with the script and the file's path.

:func:`check` is the target. tests/fuzz/test_fuzz_protocol.py runs it over the seeds and over
Hypothesis bytes in the normal suite, without atheris, so that the harness itself stays tested.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from messenger import protocol
from messenger.constants import MAX_PAYLOAD_BYTES
from messenger.exceptions import InvalidCommand
from messenger.protocol import SendMessage

SEEDS = Path(__file__).resolve().parent / "corpus" / "protocol"


def check(data: bytes) -> None:
    """One payload, as the handler meets it on ``inbound/{uid}`` and on a presence topic.

    Fails (raises) when the decoder raises anything but :class:`InvalidCommand` with a known
    code, when what the handler would publish in answer (the command's effects or the ``error``
    event) cannot be encoded as UTF-8 JSON, or when an accepted body breaks the text rule.
    """
    client_id = protocol.client_id_of(data)
    if client_id is not None and not 1 <= len(client_id) <= 64:
        raise AssertionError(f"client id {client_id!r} is not an id")
    try:
        command = protocol.parse_command(data)
    except InvalidCommand as exc:
        if exc.code not in protocol.ERROR_CODES:
            raise AssertionError(f"unknown error code {exc.code!r}") from exc
        json.loads(protocol.encode(protocol.error_event(exc.code, exc.detail, client_id)))
    else:
        if isinstance(command, SendMessage):
            if (problem := protocol.text_problem(command.body, multiline=True)) is not None:
                raise AssertionError(f"accepted a body against the text rule: {problem}")
            if len(command.body.encode("utf-8")) > MAX_PAYLOAD_BYTES:
                raise AssertionError("accepted a body over the limit")
        json.loads(protocol.encode(command.model_dump(by_alias=True)))
    protocol.parse_presence(data)


def main(argv: list[str]) -> None:
    import atheris  # the fuzz extra: only this entry point needs it

    # coverage feedback from the decoder's own functions (instrument_all would take minutes
    # over everything messenger.models loads, SQLAlchemy included)
    for value in vars(protocol).values():
        if inspect.isfunction(value) and value.__module__ == protocol.__name__:
            atheris.instrument_func(value)
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
