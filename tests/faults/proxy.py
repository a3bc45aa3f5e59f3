#!/usr/bin/env python3
"""A TCP proxy for the fault runner (tests/faults/latency.sh, silent-drop.sh).

    proxy.py --listen PORT --target HOST:PORT --control FILE

Forwards every connection on 127.0.0.1:PORT to HOST:PORT. What it does to
the traffic is read from FILE (one line, re-read every 20 ms; write it
atomically, e.g. with `mv`):

    pass        forward as it comes (also when FILE is missing or empty)
    delay MS    hold every chunk MS milliseconds before passing it on, in
                each direction (a round trip takes 2 * MS longer); chunks
                keep their order and flow concurrently, so this is added
                latency, not a bandwidth cap
    drop        silently stop forwarding: every open connection, and every
                one accepted meanwhile, is read and its bytes discarded, in
                both directions; nothing is sent, no FIN, no RST, not even a
                close of a peer that went away (a middlebox that lost its
                state, a partition). When the mode changes again, those
                connections are closed on both ends (their byte streams are
                broken); new connections are forwarded as the mode says.

Each mode change is logged to stderr with the time and what it touched.
Python 3.11, standard library only.
"""

import argparse
import asyncio
import sys
import time


def log(message):
    print(f"proxy {time.strftime('%H:%M:%S')}: {message}", file=sys.stderr, flush=True)


class Conn:
    """One client connection and its upstream."""

    def __init__(self):
        self.dropped = False
        self.writers = []

    def close(self):
        for writer in self.writers:
            writer.close()


class Proxy:
    def __init__(self, target_host, target_port, control):
        self.target = (target_host, target_port)
        self.control = control
        self.mode = "pass"
        self.delay = 0.0
        self.conns = set()

    def read_mode(self):
        try:
            with open(self.control, encoding="utf-8") as f:
                words = f.read().split()
        except FileNotFoundError:
            words = []
        if not words or words[0] == "pass":
            return "pass", 0.0
        if words[0] == "delay" and len(words) == 2:
            return "delay", int(words[1]) / 1000.0
        if words[0] == "drop":
            return "drop", 0.0
        raise ValueError(f"unknown mode in {self.control}: {' '.join(words)!r}")

    async def watch_control(self):
        while True:
            try:
                mode, delay = self.read_mode()
            except ValueError as e:
                log(str(e))
                mode, delay = self.mode, self.delay
            if (mode, delay) != (self.mode, self.delay):
                self.apply(mode, delay)
            await asyncio.sleep(0.02)

    def apply(self, mode, delay):
        if mode == "drop":
            for conn in self.conns:
                conn.dropped = True
            log(f"drop: {len(self.conns)} open connections silenced")
        elif self.mode == "drop":
            dropped = [c for c in self.conns if c.dropped]
            for conn in dropped:
                conn.close()
            log(f"{mode}{f' {delay * 1000:.0f} ms' if mode == 'delay' else ''}: "
                f"{len(dropped)} silenced connections closed")
        else:
            log(f"{mode}{f' {delay * 1000:.0f} ms' if mode == 'delay' else ''}")
        self.mode, self.delay = mode, delay

    async def handle(self, client_reader, client_writer):
        conn = Conn()
        conn.writers.append(client_writer)
        self.conns.add(conn)
        try:
            if self.mode == "drop":
                # Accepted (the kernel did the handshake) but never forwarded.
                conn.dropped = True
                await self.discard(client_reader, conn)
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.close()
                return
            conn.writers.append(upstream_writer)
            await asyncio.gather(
                self.pump(client_reader, upstream_writer, conn),
                self.pump(upstream_reader, client_writer, conn),
            )
        finally:
            self.conns.discard(conn)
            conn.close()

    async def discard(self, reader, conn):
        """Reads and throws away until the peer goes or the drop ends."""
        try:
            while conn.dropped and await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        # A peer gone while dropped is not told to the other end: wait for
        # the drop to end (it closes the connection).
        while conn.dropped and not all(w.is_closing() for w in conn.writers):
            await asyncio.sleep(0.05)

    async def pump(self, reader, writer, conn):
        """Copies reader to writer, each chunk after the current delay."""
        queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def send():
            while True:
                at, data = await queue.get()
                if data is None:
                    return
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if conn.dropped:
                    continue
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not conn.dropped:
                    queue.put_nowait((loop.time() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((0.0, None))
        try:
            await sender
        except (ConnectionError, OSError):
            pass
        if conn.dropped:
            await self.discard(reader, conn)
        else:
            # The source closed: close the other end once what it sent is out.
            writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--control", required=True, help="file holding the mode")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    proxy = Proxy(host, int(port), args.control)
    proxy.mode, proxy.delay = proxy.read_mode()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen)
    log(f"127.0.0.1:{args.listen} -> {args.target}, {proxy.mode}")
    async with server:
        await asyncio.gather(server.serve_forever(), proxy.watch_control())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
