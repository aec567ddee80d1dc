"""Reads a service the way natsio (Synadia's Python client) knows the NATS service API.

Usage: micro_client.py URL NAME SUBJECT

Asks `$SRV.PING|INFO|STATS.NAME`, parses each answer with natsio.micro's own response types,
calls SUBJECT with `7` and with `8`, asks STATS again, and prints one JSON object with what it
read, for natty/tests/service_interop.rs to check.
"""

import asyncio
import json
import sys

import natsio
from natsio.micro import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    INFO_RESPONSE_TYPE,
    PING_RESPONSE_TYPE,
    STATS_RESPONSE_TYPE,
    InfoResponse,
    PingResponse,
    StatsResponse,
)


async def ask(nc, subject, model):
    msg = await nc.request(subject, b"", timeout=5)
    return model.from_wire(json.loads(msg.data))


async def main(url: str, name: str, subject: str) -> None:
    nc = await natsio.connect(url)
    ping = await ask(nc, f"$SRV.PING.{name}", PingResponse)
    info = await ask(nc, f"$SRV.INFO.{name}", InfoResponse)
    found = await nc.request(subject, b"7", timeout=5)
    missing = await nc.request(subject, b"8", timeout=5)
    headers = missing.headers or {}
    stats = await ask(nc, f"$SRV.STATS.{name}.{ping.id}", StatsResponse)
    print(
        json.dumps(
            {
                "ping_type_ok": ping.type == PING_RESPONSE_TYPE,
                "ping": [ping.name, ping.version, ping.id],
                "info_type_ok": info.type == INFO_RESPONSE_TYPE,
                "description": info.description,
                "endpoints": [[e.name, e.subject, e.queue_group] for e in info.endpoints],
                "found": found.data.decode(),
                "error": [headers.get(ERROR_CODE_HEADER), headers.get(ERROR_HEADER)],
                "stats_type_ok": stats.type == STATS_RESPONSE_TYPE,
                "started": stats.started is not None,
                "stats": [[e.name, e.num_requests, e.num_errors] for e in stats.endpoints],
            }
        ),
        flush=True,
    )
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
