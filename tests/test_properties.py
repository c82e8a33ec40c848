"""Property: random scripts of call_soon / call_later / call_at / cancel and
nested scheduling execute in exactly the same order on asyncio and ferroloop.

All deadlines are in the past or now (negative, zero or NaN delays; call_at
on a base time minus a small offset, so equal deadlines occur), which makes the
order a pure function of the loop's semantics: batch boundaries, the heap's
tie-breaking, cancellation. Timing jitter cannot change it.
"""

from __future__ import annotations

import asyncio
import math

import ferroloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DELAYS = [-1.0, -0.5, 0.0, -0.0, math.nan, -1e-9]
OFFSETS = [0.0, 1.0, 1.0, 2.0, 5.0]

leaf = st.one_of(
    st.tuples(st.just("soon")),
    st.tuples(st.just("later"), st.sampled_from(DELAYS)),
    st.tuples(st.just("at"), st.sampled_from(OFFSETS)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
)


def with_children(children):
    return st.one_of(
        st.tuples(st.just("soon"), children),
        st.tuples(st.just("later"), st.sampled_from(DELAYS), children),
        st.tuples(st.just("at"), st.sampled_from(OFFSETS), children),
    )


action = st.recursive(leaf, lambda kids: with_children(st.lists(kids, max_size=4)), max_leaves=30)
script = st.lists(action, min_size=1, max_size=25)


def run_until_idle(loop, limit=10_000):
    """Run iterations until nothing is ready and no live timer is left.

    Deterministic regardless of speed (debug mode is much slower), unlike
    running for a fixed time."""
    for _ in range(limit):
        loop.call_soon(loop.stop)
        loop.run_forever()
        if not loop._ready and all(t.cancelled() for t in loop._scheduled):
            return
    raise AssertionError("the loop did not become idle")


def execute(factory, actions):
    loop = factory()
    order = []
    handles = []
    base = loop.time()
    counter = [0]

    def run(acts):
        for act in acts:
            kind = act[0]
            if kind == "cancel":
                if handles:
                    handles[act[1] % len(handles)].cancel()
                continue
            children = act[-1] if isinstance(act[-1], list) else []
            label = counter[0]
            counter[0] += 1

            def cb(label=label, children=children):
                order.append(label)
                run(children)

            if kind == "soon":
                handles.append(loop.call_soon(cb))
            elif kind == "later":
                handles.append(loop.call_later(act[1], cb))
            else:
                handles.append(loop.call_at(base - act[1], cb))

    try:
        loop.call_soon(run, actions)
        run_until_idle(loop)
        return order
    finally:
        loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script)
def test_same_execution_order_as_asyncio(actions):
    expected = execute(asyncio.SelectorEventLoop, actions)
    got = execute(ferroloop.new_event_loop, actions)
    assert got == expected


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(OFFSETS), min_size=150, max_size=300), st.data())
def test_many_cancelled_timers_compaction_keeps_order(offsets, data):
    # More than 100 timers with over half cancelled triggers the heap rebuild.
    cancel = data.draw(st.lists(st.booleans(), min_size=len(offsets), max_size=len(offsets)))

    def run(factory):
        loop = factory()
        order = []
        base = loop.time()
        try:
            hs = [loop.call_at(base - o * 0.001, order.append, i) for i, o in enumerate(offsets)]
            for h, c in zip(hs, cancel, strict=True):
                if c:
                    h.cancel()
            run_until_idle(loop)
            return order
        finally:
            loop.close()

    assert run(ferroloop.new_event_loop) == run(asyncio.SelectorEventLoop)
