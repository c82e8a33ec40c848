"""fork(): the child never disturbs the parent's loop; the parent's loop is unusable in the child."""

from __future__ import annotations

from conftest import run_child


def test_child_cannot_use_parent_loop_and_parent_is_unaffected(impl):
    r = run_child(
        """
        import os, socket, sys
        loop = new_loop()
        a, b = socket.socketpair()
        got = []
        loop.add_reader(a, lambda: (got.append(a.recv(100)), loop.stop()))
        pid = os.fork()
        if pid == 0:
            # Child: closing the inherited loop must not touch the parent's epoll set.
            status = 0
            if IMPL == "ferroloop":
                try:
                    loop.run_until_complete(asyncio.sleep(0))
                    status = 3
                except RuntimeError as e:
                    status = 0 if "fork" in str(e) else 4
            try:
                loop.close()
            except Exception:
                status = 5
            os._exit(status)
        _, st = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(st))
        b.send(b"still works")
        loop.call_later(5, loop.stop)
        loop.run_forever()
        print(got)
        loop.close()
        """,
        impl,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["child exit 0", "[b'still works']"]


def test_new_loop_in_child_works(impl):
    r = run_child(
        """
        import os
        loop = new_loop()
        loop.run_until_complete(asyncio.sleep(0))
        pid = os.fork()
        if pid == 0:
            child = new_loop()
            ok = child.run_until_complete(asyncio.sleep(0.01, "ok"))
            child.close()
            os._exit(0 if ok == "ok" else 1)
        _, st = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(st))
        loop.close()
        """,
        impl,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"
