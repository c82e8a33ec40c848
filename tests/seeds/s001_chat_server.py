"""Seed 001: the async chat server, driven by two local clients.

The tutorial's server runs forever on port 8888; here it listens on an
ephemeral 127.0.0.1 port, two clients connect, chat, and leave, and the server
is closed. Peer addresses are printed as client names (ports differ per run).
"""

import asyncio


class ChatServer:
    def __init__(self):
        self.clients = set()
        self.names = {}

    async def handle_client(self, reader, writer):
        hello = (await reader.readline()).decode().strip()
        self.names[writer] = hello
        print(f"Client connected: {hello}")
        self.clients.add(writer)
        try:
            while True:
                data = await reader.read(100)
                if not data:
                    break
                message = data.decode()
                print(f"Received from {hello}: {message}")
                await self.broadcast(f"{hello}: {message}", writer)
        except asyncio.CancelledError:
            pass
        finally:
            print(f"Client disconnected: {hello}")
            self.clients.remove(writer)
            writer.close()
            await writer.wait_closed()

    async def broadcast(self, message, sender):
        for client in self.clients:
            if client != sender:
                try:
                    client.write(message.encode())
                    await client.drain()
                except Exception as e:
                    print(f"Error broadcasting: {e}")

    async def start(self, host="127.0.0.1", port=0):
        return await asyncio.start_server(self.handle_client, host, port)


async def client(port, name, say, expect):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{name}\n".encode())
    await writer.drain()
    await asyncio.sleep(0.5)
    if say:
        writer.write(say.encode())
        await writer.drain()
    got = []
    for _ in range(expect):
        got.append((await reader.read(100)).decode())
    await asyncio.sleep(0.5)
    writer.close()
    await writer.wait_closed()
    return name, got


async def main():
    chat_server = ChatServer()
    server = await chat_server.start()
    port = server.sockets[0].getsockname()[1]
    print("Chat server running")
    async with server:
        results = await asyncio.gather(client(port, "alice", "hi bob", 0), client(port, "bob", None, 1))
        for name, got in results:
            print(f"{name} got {got}")
        await asyncio.sleep(0.5)
    print("server closed")


asyncio.run(main())
