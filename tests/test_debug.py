"""Debug mode: slow callbacks, PYTHONASYNCIODEBUG / -X dev, never-awaited coroutines, thread checks."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import run_child


def run_briefly(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_set_get_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_get_debug_arguments_and_closed_loop(loop):
    # get_debug() takes no argument, with asyncio's messages; a closed loop still answers.
    with pytest.raises(TypeError, match=r"get_debug\(\) takes 1 positional argument but 2 were given"):
        loop.get_debug(1)
    with pytest.raises(TypeError, match=r"get_debug\(\) got an unexpected keyword argument 'x'"):
        loop.get_debug(x=1)
    with pytest.raises(TypeError, match=r"get_debug\(\) got an unexpected keyword argument 'x'"):
        loop.get_debug(**{"x": 1})
    assert loop.get_debug(*(), **{}) is loop.get_debug()
    marker = object()
    loop.set_debug(marker)
    assert loop.get_debug() is marker
    assert loop.create_future().get_loop() is loop  # Future.__init__ asks get_debug()
    loop.set_debug(False)
    loop.close()
    assert loop.get_debug() is False


def test_slow_callback_warning_names_the_handle(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_callback():
        time.sleep(0.03)

    loop.call_soon(slow_callback)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    msgs = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert msgs and "slow_callback" in msgs[0] and "took" in msgs[0] and "seconds" in msgs[0]
    caplog.clear()


def test_no_slow_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.0
    loop.call_soon(time.sleep, 0.01)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run_briefly(loop)
    assert "Executing" not in caplog.text


def test_current_handle_tracked_in_debug(loop):
    loop.set_debug(True)
    seen = []
    h = loop.call_soon(lambda: seen.append(loop._current_handle))
    run_briefly(loop)
    assert seen == [h]
    assert loop._current_handle is None


def test_non_threadsafe_call_from_other_thread_in_debug(loop):
    loop.set_debug(True)
    errors = []

    def other_thread():
        try:
            loop.call_soon(print)
        except RuntimeError as e:
            errors.append(str(e))

    async def main():
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()

    loop.run_until_complete(main())
    assert errors == ["Non-thread-safe operation invoked on an event loop other than the current one"]


@pytest.mark.parametrize("how", ["env", "devmode"])
def test_debug_mode_from_environment(impl, how):
    env = {"PYTHONASYNCIODEBUG": "1"} if how == "env" else {"PYTHONDEVMODE": "1"}
    r = run_child(
        """
        loop = new_loop()
        print(loop.get_debug())
        loop.close()
        """,
        impl,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


def test_never_awaited_coroutine_warning_has_origin_in_debug(impl):
    r = run_child(
        """
        import gc, warnings
        warnings.simplefilter("always")
        async def never():
            pass
        async def main():
            never()
            gc.collect()
        loop = new_loop()
        loop.set_debug(True)
        loop.run_until_complete(main())
        loop.close()
        """,
        impl,
    )
    assert r.returncode == 0, r.stderr
    assert "coroutine 'never' was never awaited" in r.stderr
    assert "Coroutine created at (most recent call last)" in r.stderr


def test_set_debug_keeps_what_it_was_given(loop):
    # asyncio stores the object itself; truthiness decides debug behaviour.
    for value, expected_on in [(1, True), (None, False), ("", False), ("yes", True), (True, True), (False, False)]:
        loop.set_debug(value)
        assert loop.get_debug() is value
        assert loop._debug is value
        # A callback's repr carries its source only in debug mode (the flag the loop acts on).
        handle = loop.call_soon(print)
        assert ("created at" in repr(handle)) is expected_on
        handle.cancel()
    loop.set_debug(False)
