"""pytest plugin: run a project's asyncio tests on ferroloop (docs/pytest-plugin.md).

Enable it with ``ferroloop_mode = ferroloop`` (or ``both``) in the pytest ini
file, or ``--ferroloop-mode=...`` on the command line; ``-p ferroloop.pytest_plugin``
loads it where the package's ``pytest11`` entry point is not installed.

- ``off`` (the default): nothing happens. This module then defines only the
  option and the ini key; no fixture, hook or import of pytest-asyncio or anyio
  is added, so installing ferroloop changes nobody's tests.
- ``ferroloop``: every pytest-asyncio test, ``IsolatedAsyncioTestCase`` and
  anyio test on the asyncio backend runs on a ferroloop loop.
- ``both``: each such test runs twice, as ``[asyncio]`` and ``[ferroloop]``;
  the terminal summary lists the tests whose outcome differs and a difference
  makes the session fail.

How the loop is chosen:

- pytest-asyncio >= 1.4: its ``pytest_asyncio_loop_factories`` hook (which
  also parametrizes the tests in ``both`` mode);
- older pytest-asyncio (0.23 up to 1.3): an override of its ``event_loop_policy``
  fixture (in ``both`` mode it depends on the session-scoped parametrized
  fixture ``_ferroloop_impl``);
- anyio: the value of the ``anyio_backend`` fixture gets the backend option
  ``loop_factory`` (anyio >= 4);
- ``IsolatedAsyncioTestCase``: ``loop_factory`` on the test case instance
  (Python 3.13+), ferroloop's policy while the test runs (3.11/3.12); in
  ``both`` mode the class is collected twice, as ``Class[asyncio]`` and
  ``Class[ferroloop]``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import unittest
import warnings
from collections.abc import Generator
from typing import Any

import pytest

from . import EventLoopPolicy, new_event_loop

MODES = ("off", "ferroloop", "both")
ASYNCIO = "asyncio"
FERROLOOP = "ferroloop"
IMPLS = (ASYNCIO, FERROLOOP)

#: The parametrized fixture whose value says which loop a ``both`` variant runs on.
IMPL_FIXTURE = "_ferroloop_impl"
#: pytest-asyncio's (>= 1.4) parametrized fixture holding the loop factory.
_PA_FACTORY_FIXTURE = "_asyncio_loop_factory"
_PA_HOOK = "pytest_asyncio_loop_factories"

_UNITTEST_IMPL = pytest.StashKey[str]()
_VARIANT = pytest.StashKey[tuple[str, str]]()

_MODE_HELP = (
    "run asyncio tests (pytest-asyncio, anyio, IsolatedAsyncioTestCase) on ferroloop: "
    "'off' (default), 'ferroloop', or 'both' (each test on asyncio and on ferroloop, "
    "reporting the tests whose outcome differs)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferroloop", "ferroloop event loop")
    group.addoption(
        "--ferroloop-mode",
        dest="ferroloop_mode",
        default=None,
        choices=MODES,
        metavar="MODE",
        help=_MODE_HELP + "; overrides the ferroloop_mode ini option",
    )
    parser.addini("ferroloop_mode", help=_MODE_HELP, default="off")


def get_mode(config: pytest.Config) -> str:
    """The mode in force: ``--ferroloop-mode``, else the ``ferroloop_mode`` ini option, else ``off``."""
    value = config.getoption("ferroloop_mode", default=None)
    if value is None:
        value = config.getini("ferroloop_mode")
    value = str(value or "off").strip().lower()
    if value not in MODES:
        raise pytest.UsageError(f"ferroloop_mode must be one of {', '.join(MODES)}, not {value!r}")
    return value


def pytest_configure(config: pytest.Config) -> None:
    mode = get_mode(config)
    if mode == "off":
        return
    pm = config.pluginmanager
    caller = getattr(config.hook, _PA_HOOK, None)
    has_factories_hook = caller is not None and getattr(caller, "spec", None) is not None
    if has_factories_hook:
        pm.register(_LoopFactoriesHook(mode), "ferroloop-asyncio-loop-factories")
    else:
        pm.register(_PolicyFixture() if mode == "ferroloop" else _BothPolicyFixture(), "ferroloop-event-loop-policy")
    pm.register(_LoopSelection(mode, has_factories_hook), "ferroloop-mode")
    if mode == "both":
        pm.register(_BothMode(has_factories_hook), "ferroloop-both")


# -- the loops ---------------------------------------------------------------


def _ferroloop_loop() -> asyncio.AbstractEventLoop:
    return new_event_loop()


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    """The loop the project gets without ferroloop: a new loop of the current policy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
    return policy.new_event_loop()


def _ferroloop_policy() -> asyncio.AbstractEventLoopPolicy:
    policy: asyncio.AbstractEventLoopPolicy = EventLoopPolicy()
    return policy


def _current_policy() -> asyncio.AbstractEventLoopPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return asyncio.get_event_loop_policy()


def _set_policy(policy: asyncio.AbstractEventLoopPolicy | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)


def _item_impl(item: Any) -> str | None:
    """Which loop a ``both`` variant runs on (``None``: not a variant)."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        impl = callspec.params.get(IMPL_FIXTURE)
        if impl in IMPLS:
            return str(impl)
        factory = callspec.params.get(_PA_FACTORY_FIXTURE)
        if factory is _ferroloop_loop:
            return FERROLOOP
        if factory is _asyncio_loop:
            return ASYNCIO
    parent = getattr(item, "parent", None)
    if parent is not None:
        return parent.stash.get(_UNITTEST_IMPL, None)
    return None


def _request_impl(request: Any) -> str:
    """The loop of the test a fixture is being set up for (sync tests count as asyncio)."""
    return _item_impl(getattr(request, "_pyfuncitem", None)) or ASYNCIO


def _key_cache_by_impl(fixturedef: Any) -> None:
    """Make a (wider-scoped) fixture's cached value depend on the loop of the requesting test.

    When a ``[ferroloop]`` variant follows an ``[asyncio]`` one, pytest then
    tears the fixture down (and whatever it finalizes) and sets it up again,
    instead of handing over a value made for the other loop.
    """
    if getattr(fixturedef, "_ferroloop_keyed", False):
        return
    original = fixturedef.cache_key

    def cache_key(request: Any) -> object:
        return (original(request), _request_impl(request))

    fixturedef.cache_key = cache_key
    fixturedef._ferroloop_keyed = True


# -- pytest-asyncio ----------------------------------------------------------


class _LoopFactoriesHook:
    """pytest-asyncio >= 1.4: choose the loop through its hook."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    # trylast: a project's own implementation (first result wins) keeps its say.
    @pytest.hookimpl(trylast=True)
    def pytest_asyncio_loop_factories(self, config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
        if self.mode == "both":
            return {ASYNCIO: _asyncio_loop, FERROLOOP: _ferroloop_loop}
        return {FERROLOOP: _ferroloop_loop}


class _PolicyFixture:
    """pytest-asyncio < 1.4, ``ferroloop`` mode: override its ``event_loop_policy`` fixture.

    Not autouse here: pytest-asyncio's own definition is, so the name is only in
    a test's closure when pytest-asyncio is installed, and then this later
    registered definition is the one used (a conftest's still wins).
    """

    @pytest.fixture(scope="session")
    def event_loop_policy(self) -> asyncio.AbstractEventLoopPolicy:
        return _ferroloop_policy()


class _BothPolicyFixture:
    """pytest-asyncio < 1.4, ``both`` mode: the policy of the variant's loop.

    Depends on ``_ferroloop_impl`` as an argument, so pytest sets it (and the
    loops pytest-asyncio makes from it) up again when the variant changes.
    """

    @pytest.fixture(scope="session")
    def event_loop_policy(self, _ferroloop_impl: str) -> asyncio.AbstractEventLoopPolicy:
        return _ferroloop_policy() if _ferroloop_impl == FERROLOOP else _current_policy()


# -- everything else ---------------------------------------------------------


def _is_async_test_function(func: Any) -> bool:
    hypothesis = getattr(func, "hypothesis", None)
    if hypothesis is not None:
        func = getattr(hypothesis, "inner_test", func)
    return inspect.iscoroutinefunction(func)


def _is_isolated_async_case(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, unittest.IsolatedAsyncioTestCase)


def _anyio_backend_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return value[0]
    return None


def _anyio_backend_on_ferroloop(value: Any) -> Any:
    """``anyio_backend``'s value with ferroloop as the asyncio backend's loop factory."""
    name = _anyio_backend_name(value)
    if name != "asyncio":
        return value
    options = dict(value[1]) if isinstance(value, tuple) and isinstance(value[1], dict) else {}
    options["loop_factory"] = _ferroloop_loop
    return ("asyncio", options)


def _strip_id(nodeid: str, token: str) -> str:
    """``nodeid`` without the parametrization id ``token`` (``t[1-ferroloop]`` -> ``t[1]``)."""
    head, sep, name = nodeid.rpartition("::")
    base, bracket, ids = name.partition("[")
    if not bracket or not ids.endswith("]"):
        return nodeid
    parts = ids[:-1].split("-")
    if token in parts:
        parts.remove(token)
    return head + sep + base + (f"[{'-'.join(parts)}]" if parts else "")


def _variant_key(item: pytest.Item, impl: str) -> str:
    """What an item's ``[asyncio]`` and ``[ferroloop]`` variants have in common: its id without the loop."""
    parent = item.parent
    if parent is not None and parent.stash.get(_UNITTEST_IMPL, None) == impl:
        suffix = f"[{impl}]"
        parent_id = parent.nodeid[: -len(suffix)] if parent.nodeid.endswith(suffix) else parent.nodeid
        return f"{parent_id}::{item.name}"
    return _strip_id(item.nodeid, impl)


def _outcome(report: pytest.TestReport) -> str:
    if report.passed:
        return "xpassed" if hasattr(report, "wasxfail") else "passed"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return "failed" if report.when == "call" else "error"


class _LoopSelection:
    """``ferroloop`` and ``both`` modes: anyio and ``IsolatedAsyncioTestCase``."""

    def __init__(self, mode: str, has_factories_hook: bool) -> None:
        self.mode = mode
        self.has_factories_hook = has_factories_hook

    def pytest_report_header(self) -> str:
        how = "its loop factories hook" if self.has_factories_hook else "the event_loop_policy fixture"
        return f"ferroloop: mode {self.mode} (pytest-asyncio through {how})"

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
        argname = fixturedef.argname
        if self.mode == "both":
            if argname == "anyio_backend":
                _key_cache_by_impl(fixturedef)
            elif "anyio_backend" in request.fixturenames and (
                inspect.iscoroutinefunction(fixturedef.func) or inspect.isasyncgenfunction(fixturedef.func)
            ):
                # An async fixture anyio runs is tied to the loop it was set up
                # on, and while it lives anyio keeps that loop's runner for
                # every test: it goes when the loop changes, with anyio_backend.
                backend = request._get_active_fixturedef("anyio_backend")
                backend.addfinalizer(functools.partial(fixturedef.finish, request=request))
        value = yield
        if argname != "anyio_backend":
            return value
        impl = FERROLOOP if self.mode == "ferroloop" else _request_impl(request)
        if impl != FERROLOOP:
            return value
        new = _anyio_backend_on_ferroloop(value)
        cached = fixturedef.cached_result
        if new is not value and cached is not None and cached[2] is None:
            # What request.getfixturevalue() and so the tests read.
            fixturedef.cached_result = (new, cached[1], None)
        return new

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        if not _is_isolated_async_case(getattr(item, "cls", None)):
            return (yield)
        impl = FERROLOOP if self.mode == "ferroloop" else _item_impl(item)
        if impl != FERROLOOP:
            return (yield)
        if sys.version_info >= (3, 13):
            # IsolatedAsyncioTestCase passes self.loop_factory to its asyncio.Runner.
            testcase: Any = getattr(item, "_testcase", None) or getattr(item, "instance", None)
            testcase.loop_factory = _ferroloop_loop
            return (yield)
        # 3.11/3.12: its asyncio.Runner(debug=True) asks the policy for a loop.
        previous = _current_policy()
        _set_policy(_ferroloop_policy())
        try:
            return (yield)
        finally:
            _set_policy(previous)


class _BothMode:
    """``both`` mode: the ``[asyncio]`` and ``[ferroloop]`` variants, and their comparison."""

    def __init__(self, has_factories_hook: bool) -> None:
        self.has_factories_hook = has_factories_hook
        #: test id without the loop -> {impl: outcome}
        self.outcomes: dict[str, dict[str, str]] = {}
        self.differ: list[tuple[str, str, str]] = []
        self.compared = 0
        self.single = 0

    @pytest.fixture(scope="session")
    def _ferroloop_impl(self, request: pytest.FixtureRequest) -> str:
        """``asyncio`` or ``ferroloop``: the loop this ``both`` variant runs on."""
        return str(getattr(request, "param", ASYNCIO))

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if not _is_async_test_function(metafunc.function):
            return
        names = metafunc.fixturenames
        if "anyio_backend" in names:
            pass  # an anyio test
        elif self.has_factories_hook or "event_loop_policy" not in names:
            return  # pytest-asyncio >= 1.4 parametrizes its tests itself (or no pytest-asyncio)
        elif not self._older_pytest_asyncio_test(metafunc):
            return
        if IMPL_FIXTURE not in names:
            names.append(IMPL_FIXTURE)
        # Session scope: pytest groups the variants by loop (a pass on asyncio,
        # then one on ferroloop), and the wider-scoped loops and fixtures are
        # set up again for the second pass instead of being shared.
        metafunc.parametrize(IMPL_FIXTURE, list(IMPLS), ids=list(IMPLS), indirect=True, scope="session")

    @staticmethod
    def _older_pytest_asyncio_test(metafunc: pytest.Metafunc) -> bool:
        """A test pytest-asyncio < 1.4 runs, with this plugin's ``event_loop_policy`` in force."""
        if metafunc.definition.get_closest_marker("asyncio") is None:
            config = metafunc.config
            try:
                mode = config.getoption("asyncio_mode", default=None) or config.getini("asyncio_mode")
            except ValueError:
                return False
            if mode != "auto":
                return False
        info = getattr(metafunc.definition, "_fixtureinfo", None)
        defs = info.name2fixturedefs.get("event_loop_policy") if info is not None else None
        if not defs:
            return False
        # Where a conftest overrides event_loop_policy, it chooses the loop: no variants.
        return isinstance(getattr(defs[-1].func, "__self__", None), _BothPolicyFixture)

    @pytest.hookimpl(wrapper=True)
    def pytest_pycollect_makeitem(self, collector: Any, name: str, obj: object) -> Generator[None, Any, Any]:
        result = yield
        if not result or not _is_isolated_async_case(obj):
            return result
        # One node, or a list of them (what pytest-asyncio's wrapper makes of it).
        nodes = list(result) if isinstance(result, list | tuple) else [result]
        out: list[Any] = []
        for node in nodes:
            if not isinstance(node, pytest.Class) or node.obj is not obj:
                out.append(node)
                continue
            for impl in IMPLS:
                variant = type(node).from_parent(collector, name=f"{name}[{impl}]", obj=obj)
                variant.obj = obj
                variant.stash[_UNITTEST_IMPL] = impl
                out.append(variant)
        return out

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep: list[pytest.Item] = []
        dropped: list[pytest.Item] = []
        for item in items:
            impl = _item_impl(item)
            if impl is not None:
                callspec = getattr(item, "callspec", None)
                backend = callspec.params.get("anyio_backend") if callspec is not None else None
                if impl == FERROLOOP and backend is not None and _anyio_backend_name(backend) != "asyncio":
                    # ferroloop only stands in for asyncio's loop: no trio variant.
                    dropped.append(item)
                    continue
                item.stash[_VARIANT] = (_variant_key(item, impl), impl)
            keep.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
        report = yield
        variant = item.stash.get(_VARIANT, None)
        if variant is not None:
            # On the report, so that it also reaches pytest-xdist's controller.
            report.ferroloop_variant = list(variant)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        variant = getattr(report, "ferroloop_variant", None)
        if not variant:
            return
        key, impl = variant
        outcomes = self.outcomes.setdefault(key, {})
        if report.when in ("setup", "call"):
            # A call report only follows a setup that passed.
            outcomes[impl] = _outcome(report)
        elif report.failed:
            outcomes[impl] = outcomes.get(impl, "passed") + ", error at teardown"

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.differ = []
        self.compared = self.single = 0
        for key, outcomes in self.outcomes.items():
            if len(outcomes) < 2:
                self.single += 1
                continue
            self.compared += 1
            if outcomes[ASYNCIO] != outcomes[FERROLOOP]:
                self.differ.append((key, outcomes[ASYNCIO], outcomes[FERROLOOP]))
        # A compatibility check that found a difference fails, even where no
        # test did (passed on one loop, skipped or xfailed on the other).
        if self.differ and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        tr.write_sep("=", "ferroloop: outcomes that differ between asyncio and ferroloop")
        for key, on_asyncio, on_ferroloop in self.differ:
            tr.write_line(f"DIFFERS {key}: asyncio {on_asyncio}, ferroloop {on_ferroloop}")
        tests = "test" if self.compared == 1 else "tests"
        line = f"ferroloop: {self.compared} {tests} ran on both loops, {len(self.differ)} differ"
        if self.single:
            line += f" ({self.single} ran on one loop only, not compared)"
        tr.write_line(line)
