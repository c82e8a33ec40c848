"""Seed 001: aiofiles examples (in a temporary directory)."""

import asyncio
import os
import tempfile

import aiofiles

os.chdir(tempfile.mkdtemp(prefix="ferroloop-seed-"))


async def read_file(filename):
    async with aiofiles.open(filename) as f:
        return await f.read()


async def write_file(filename, content):
    async with aiofiles.open(filename, mode="w") as f:
        await f.write(content)


async def main_rw():
    await write_file("test.txt", "Hello, async file I/O!")
    content = await read_file("test.txt")
    print(f"Read: {content}")


asyncio.run(main_rw())


async def process_file(input_file, output_file):
    async with aiofiles.open(input_file) as f:
        content = await f.read()
    processed = content.upper()
    async with aiofiles.open(output_file, mode="w") as f:
        await f.write(processed)
    return f"Processed {input_file} -> {output_file}"


async def main_process():
    files = [("input1.txt", "output1.txt"), ("input2.txt", "output2.txt"), ("input3.txt", "output3.txt")]
    for i, (inp, _) in enumerate(files):
        await write_file(inp, f"contents of file {i}\n")
    results = await asyncio.gather(*[process_file(inp, out) for inp, out in files])
    for result in results:
        print(result)
    print(await read_file("output2.txt"), end="")


asyncio.run(main_process())


async def process_large_file(filename):
    line_count = 0
    async with aiofiles.open(filename) as f:
        async for line in f:
            line_count += 1
            if line.strip():
                pass
    return line_count


async def main_large():
    await write_file("large_data.txt", "".join(f"line {i}\n" for i in range(5000)))
    count = await process_large_file("large_data.txt")
    print(f"Processed {count} lines")


asyncio.run(main_large())
