"""One member of a partitioned consumer group, run with natsio-pcgroups (orbit's Python port).

Usage: pcgroups_member.py URL static|elastic STREAM GROUP MEMBER

Prints `start|end <realtime ns> <key> <n> <partition>` around each message's handling, and
`ready` once consuming; acks each message; leaves when its standard input closes.
"""

import asyncio
import sys
import time

import natsio
from natsio.jetstream import AckPolicy, ConsumerConfig
from natsio.pcgroups import elastic_consume, static_consume


async def main(url: str, kind: str, stream: str, group: str, member: str) -> None:
    nc = await natsio.connect(url)
    js = nc.jetstream()

    async def handle(msg) -> None:
        key = msg.subject.split(".", 1)[1]
        n = msg.data.decode()
        print(f"start {time.time_ns()} {key} {n} {msg.partition}", flush=True)
        await asyncio.sleep(0.001)
        print(f"end {time.time_ns()} {key} {n} {msg.partition}", flush=True)
        await msg.ack()

    consume = static_consume if kind == "static" else elastic_consume
    context = await consume(
        js, stream, group, member, handle, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
    )
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await context.stop()
    await nc.close()


asyncio.run(main(*sys.argv[1:6]))
