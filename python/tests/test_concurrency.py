"""Many threads on one Client, the daemon's in-flight limit, and asyncio,
against the real daemon."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List

import pytest

import sockfactory
import sockfactory.aio


def test_many_threads_one_client(client, echo_server):
    host, port = echo_server
    errors: List[BaseException] = []
    client.status()  # connected: every thread shares this connection

    def work(n: int) -> None:
        try:
            for i in range(10):
                msg = ("%d-%d\n" % (n, i)).encode()
                with client.connect(host, port) as s:
                    s.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += s.recv(100)
                    assert got == msg
                with client.bind("udp", "127.0.0.1:0") as u:
                    assert u.token in [h.token for st in client.status().sockets for h in st.holders]
                with pytest.raises(sockfactory.DeniedError):
                    client.connect("192.0.2.1", 9)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert client.status().sockets == []


def test_in_flight_limit_is_retried(start_daemon, echo_server):
    """A daemon that allows 2 requests in flight per connection refuses
    the rest unseen; the client sends them again and all succeed."""
    d = start_daemon(
        """
[[rule]]
name = "tests"
users = [%d]
connect = ["127.0.0.0/8:*"]
"""
        % os.getuid(),
        daemon_extra="max_in_flight = 2",
    )
    host, port = echo_server
    with sockfactory.Client(d.socket) as c:

        def one(_: int) -> bytes:
            with c.connect(host, port) as s:
                s.sendall(b"k")
                return s.recv(1)

        with ThreadPoolExecutor(32) as pool:
            assert list(pool.map(one, range(200))) == [b"k"] * 200


def test_close_while_requests_wait(sock_path):
    """Close fails the requests in flight with ClientClosedError, never
    hangs them."""
    c = sockfactory.Client(sock_path)
    c.status()
    results: List[BaseException] = []
    barrier = threading.Barrier(9)

    def work() -> None:
        barrier.wait()
        try:
            for _ in range(1000):
                c.status()
        except sockfactory.UnavailableError as e:
            results.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    c.close()
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    assert len(results) == 8
    assert all(isinstance(e, sockfactory.ClientClosedError) for e in results)


def test_aio_open_connection(sock_path, echo_server):
    host, port = echo_server

    async def run() -> bytes:
        reader, writer = await sockfactory.aio.open_connection(host, port, timeout=5)
        sock = writer.get_extra_info("socket")
        assert sock.family == socket.AF_INET
        writer.write(b"async hello\n")
        await writer.drain()
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    assert asyncio.run(run()) == b"async hello\n"


def test_aio_does_not_block_the_loop(sock_path, echo_server):
    """Many connects at once on one loop, while a ticker keeps running."""
    host, port = echo_server

    async def run() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())

        async def one(i: int) -> bytes:
            r, w = await sockfactory.aio.open_connection(host, port)
            w.write(b"%d\n" % i)
            line = await r.readline()
            w.close()
            await w.wait_closed()
            return line

        lines = await asyncio.gather(*(one(i) for i in range(20)))
        stop.set()
        await t
        assert lines == [b"%d\n" % i for i in range(20)]
        return ticks

    assert asyncio.run(run()) > 20


def test_aio_errors(sock_path, refused_port):
    async def run() -> None:
        with pytest.raises(sockfactory.ConnectFailedError) as ei:
            await sockfactory.aio.open_connection("127.0.0.1", refused_port)
        assert ei.value.errno == 111
        with pytest.raises(sockfactory.DeniedError):
            await sockfactory.aio.connect("192.0.2.1", 1)
        with pytest.raises(sockfactory.UnavailableError):
            await sockfactory.aio.connect("127.0.0.1", 1, socket_path="/nonexistent/sf.sock")
        s = await sockfactory.aio.connect("127.0.0.1", refused_port, network="udp")
        with s:
            assert s.type == socket.SOCK_DGRAM and not s.getblocking()

    asyncio.run(run())
