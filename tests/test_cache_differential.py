"""Differential tests: every cache policy's compiled paths -- ``run()``, ``step()`` and
``run_layer()`` under both step models -- against the plain definitions of ``caches.reference``,
hit flag by hit flag, on long streams over few ids (uniform, Zipf, loops, scans, moving hot sets,
mixtures; ``caches.streams``). Short or varied streams never fill and wrap S3-FIFO's ghost ring,
which is how its compaction bug (writing from slot 0 while reading from the tail) went unseen; these
streams do, and the fast suite runs them at 10^4 requests (``slow``: 10^5). The rare branches these
streams reach are checked by ``test_cache_coverage``."""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings

from cache_cases import HARD_CASES, POLICIES, cases, check


def with_hard_cases(test):
    for case in HARD_CASES.values():
        test = example(case=case)(test)
    return test


@pytest.mark.parametrize("name", POLICIES)
@given(case=cases(10_000, 12_000))
@with_hard_cases
@settings(max_examples=3)
def test_policy_equals_reference_on_long_streams(name, case):
    check(name, case)


@pytest.mark.slow
@pytest.mark.parametrize("name", POLICIES)
@given(case=cases(100_000, 100_000))
@settings(max_examples=8)
def test_policy_equals_reference_on_streams_of_100k_requests(name, case):
    check(name, case)
