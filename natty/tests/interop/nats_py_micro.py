"""The NATS service API as nats-py (PyPI `nats-py`, the `nats.micro` package) speaks it.

Usage:
  nats_py_micro.py read URL NAME SUBJECT
      Asks `$SRV.PING|INFO|STATS.NAME`, parses each answer with nats.micro's own types
      (`ServicePing`, `ServiceInfo`, `ServiceStats`: their `from_dict` reads every field the
      Go and Python clients send and fails on a missing one; see `ask_stats` for the
      fields adjusted first), calls SUBJECT with `7` and `8`,
      asks STATS again, and prints one JSON object with what it read.
  nats_py_micro.py serve URL
      Runs service `inventory` 1.4.0 with endpoints `inventory.get` (`7` finds an item, anything
      else is a 404 service error) and `inventory.boom` (its handler raises: nats.micro answers
      500), prints `ready ID` once subscribed, and stops when stdin closes.

For natty/tests/service_interop.rs to check.
"""

import asyncio
import json
import sys

import nats
from nats.micro import add_service
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER, ServiceError
from nats.micro.service import (
    INFO_RESPONSE_TYPE,
    PING_RESPONSE_TYPE,
    STATS_RESPONSE_TYPE,
    EndpointConfig,
    GroupConfig,
    ServiceConfig,
    ServiceInfo,
    ServicePing,
    ServiceStats,
)


async def ask(nc, subject, model):
    msg = await nc.request(subject, b"", timeout=5)
    return model.from_dict(json.loads(msg.data))


def microseconds(started: str) -> str:
    """`started` cut to the 6 fractional digits Python's `strptime` takes."""
    whole, _, fraction = started.rstrip("Z").partition(".")
    return f"{whole}.{(fraction or '0')[:6]}Z"


async def ask_stats(nc, subject):
    """STATS parsed by `ServiceStats.from_dict`, after the fields it is stricter about than the
    services that send them are adjusted; returns the stats and which
    fields were missing.

    - `started`: Go's micro package and async-nats (natty's services) send RFC 3339 with
      nanoseconds; nats-py 2.16 parses it with `"%Y-%m-%dT%H:%M:%S.%fZ"`, at most 6 digits.
    - `metadata`: async-nats 0.51's STATS leaves the service's metadata out (INFO has it).
    - an endpoint's `data`: omitted when a service has no stats handler (Go's `omitempty`
      does the same); nats-py reads it as a required key.
    """
    msg = await nc.request(subject, b"", timeout=5)
    data = json.loads(msg.data)
    data["started"] = microseconds(data["started"])  # always: 6 digits or fewer pass as sent
    adjusted = []
    if "metadata" not in data:
        data["metadata"] = {}
        adjusted.append("metadata")
    if any("data" not in endpoint for endpoint in data["endpoints"]):
        data["endpoints"] = [{"data": None, **endpoint} for endpoint in data["endpoints"]]
        adjusted.append("endpoints.data")
    return ServiceStats.from_dict(data), adjusted


async def read(url: str, name: str, subject: str) -> None:
    nc = await nats.connect(url)
    ping = await ask(nc, f"$SRV.PING.{name}", ServicePing)
    info = await ask(nc, f"$SRV.INFO.{name}", ServiceInfo)
    found = await nc.request(subject, b"7", timeout=5)
    missing = await nc.request(subject, b"8", timeout=5)
    headers = missing.headers or {}
    stats, adjusted = await ask_stats(nc, f"$SRV.STATS.{name}.{ping.id}")
    print(
        json.dumps(
            {
                "types_ok": [
                    ping.type == PING_RESPONSE_TYPE,
                    info.type == INFO_RESPONSE_TYPE,
                    stats.type == STATS_RESPONSE_TYPE,
                ],
                "ping": [ping.name, ping.version, ping.id],
                "description": info.description,
                "metadata": info.metadata,
                "endpoints": [
                    [e.name, e.subject, e.queue_group, e.metadata] for e in info.endpoints
                ],
                "found": found.data.decode(),
                "error": [headers.get(ERROR_CODE_HEADER), headers.get(ERROR_HEADER)],
                "adjusted": adjusted,
                "stats": [
                    [e.name, e.num_requests, e.num_errors, e.last_error] for e in stats.endpoints
                ],
                "timed": all(
                    e.processing_time >= e.average_processing_time > 0 for e in stats.endpoints
                ),
            }
        ),
        flush=True,
    )
    await nc.close()


async def get(request) -> None:
    if request.data == b"7":
        await request.respond(b"item 7")
    else:
        await request.respond_error("404", "no such item")


async def boom(request) -> None:
    raise ServiceError("500", "the handler raised")


async def serve(url: str) -> None:
    nc = await nats.connect(url)
    service = await add_service(
        nc, ServiceConfig(name="inventory", version="1.4.0", description="stock levels")
    )
    group = service.add_group(GroupConfig(name="inventory"))
    await group.add_endpoint(EndpointConfig(name="get", handler=get))
    await group.add_endpoint(EndpointConfig(name="boom", handler=boom))
    await nc.flush()
    print(f"ready {service.id}", flush=True)
    # The test closes stdin when it is done (or dies): stop then, never linger.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await service.stop()
    await nc.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    asyncio.run({"read": read, "serve": serve}[mode](*args))
