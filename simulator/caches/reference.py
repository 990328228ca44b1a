"""Plain per-request cache policies: the textbook definitions the vectorized ones are checked against.

Each class simulates one layer with ordinary Python containers, one access at a time. A set step
is taken the way ``caches.base`` defines it: hits decided first; then every column of the set is
touched in ascending index order (misses inserted); then, while over capacity, victims are taken
first among columns outside the set, then among the set's own columns. With one column per step
this is the usual per-request policy. These are slow and meant for tests and for reading.
"""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from typing import Iterable


class RefCache:
    def __init__(self, capacity: int):
        self.C = int(capacity)
        self.t = 0

    def contents(self) -> set[int]:
        raise NotImplementedError

    def step(self, cols: Iterable[int]) -> set[int]:
        hits = self.apply(cols)
        self.t += 1
        return hits

    def apply(self, cols: Iterable[int]) -> set[int]:
        """One set step at time ``t`` (which the caller advances)."""
        cols = sorted(set(cols))
        hits = {c for c in cols if c in self.contents()}
        for c in cols:
            self.touch(c, c in hits)
        members = set(cols)
        while len(self.contents()) > self.C:
            victim = self.victim(lambda c: c not in members)
            if victim is None:
                victim = self.victim(lambda c: True)
            self.remove(victim)
        return hits

    def touch(self, c: int, hit: bool) -> None:
        raise NotImplementedError

    def victim(self, allowed):
        raise NotImplementedError

    def remove(self, c: int) -> None:
        raise NotImplementedError


class LRURef(RefCache):
    def __init__(self, capacity):
        super().__init__(capacity)
        self.od: OrderedDict[int, None] = OrderedDict()  # least recent first

    def contents(self):
        return self.od.keys()

    def touch(self, c, hit):
        self.od[c] = None
        self.od.move_to_end(c)

    def victim(self, allowed):
        return next((c for c in self.od if allowed(c)), None)

    def remove(self, c):
        del self.od[c]


class FIFORef(LRURef):
    def touch(self, c, hit):
        if not hit:
            self.od[c] = None


class LFURef(RefCache):
    def __init__(self, capacity):
        super().__init__(capacity)
        self.freq: dict[int, int] = {}
        self.order: dict[int, tuple[int, int]] = {}  # (last step, order within the step)
        self._seq = 0

    def contents(self):
        return self.freq.keys()

    def touch(self, c, hit):
        self.freq[c] = self.freq.get(c, 0) + 1
        self._seq += 1
        self.order[c] = (self.t, self._seq)

    def victim(self, allowed):
        cands = [c for c in self.freq if allowed(c)]
        return min(cands, key=lambda c: (self.freq[c], self.order[c])) if cands else None

    def remove(self, c):
        del self.freq[c]
        del self.order[c]


class PinnedRef(LRURef):
    def __init__(self, capacity, pinned: Iterable[int]):
        super().__init__(capacity)
        self.pinned = set(pinned)
        for c in sorted(self.pinned):
            self.od[c] = None

    def victim(self, allowed):
        return next((c for c in self.od if allowed(c) and c not in self.pinned), None)


class WindowRef(LRURef):
    """LRU whose columns also leave ``tokens`` steps after their last use (LLM in a Flash's window)."""

    def __init__(self, capacity, tokens: int = 5):
        super().__init__(capacity)
        self.tokens = int(tokens)
        self.last: dict[int, int] = {}

    def touch(self, c, hit):
        super().touch(c, hit)
        self.last[c] = self.t

    def _expire(self) -> None:
        for c in [c for c in self.od if self.last[c] <= self.t - self.tokens]:
            del self.od[c]

    def step(self, cols):
        hits = self.apply(cols)
        self._expire()
        self.t += 1
        return hits

    def sequential_step(self, cols):
        """A token's requests, one at a time at the token's step; the window counts tokens."""
        hits = {c for c in sorted(set(cols)) if self.apply([c])}
        self._expire()
        self.t += 1
        return hits


class BeladyRef(RefCache):
    """Evicts the column whose next use is farthest (never again = farthest; ties: lowest index)."""

    def __init__(self, capacity, future: list[set[int]]):
        super().__init__(capacity)
        self.future = future
        self.cache: set[int] = set()
        self.uses: dict[int, list[int]] = {}      # the steps that use each column, ascending
        for t, cols in enumerate(future):
            for c in cols:
                self.uses.setdefault(c, []).append(t)

    def contents(self):
        return self.cache

    def touch(self, c, hit):
        self.cache.add(c)

    def next_use(self, c):
        """The first step after this one that uses ``c`` (``len(future) + 1``: never)."""
        uses = self.uses.get(c, [])
        i = bisect.bisect_right(uses, self.t)
        return uses[i] if i < len(uses) else len(self.future) + 1

    def victim(self, allowed):
        cands = [c for c in self.cache if allowed(c)]
        return min(cands, key=lambda c: (-self.next_use(c), c)) if cands else None

    def remove(self, c):
        self.cache.discard(c)


class S3FIFORef:
    """S3-FIFO, one request at a time, with the pinning rule for set steps (see caches/s3fifo.py);
    ``lcs``: libCacheSim's later rule (a miss finding S full before any eviction goes to M)."""

    def __init__(self, capacity, lcs=False):
        self.lcs = lcs
        self.C = C = int(capacity)
        self.s_max = max(1, (C * 10) // 100)
        self.m_max = C - self.s_max
        self.g_max = (C * 90) // 100
        self.S: deque[int] = deque()  # appendleft = head, pop = tail
        self.M: deque[int] = deque()
        self.G: deque[int] = deque()
        self.freq: dict[int, int] = {}
        self.has_evicted = False

    def contents(self):
        return set(self.S) | set(self.M)

    def step(self, cols):
        cols = sorted(set(cols))
        res = self.contents()
        hits = {c for c in cols if c in res}
        pinned = set(hits)
        for c in hits:
            self.freq[c] = min(self.freq[c] + 1, 3)
        for c in cols:
            if c not in hits:
                self._miss(c, pinned)
        return hits

    def _miss(self, x, pinned):
        in_ghost = x in self.G
        if in_ghost:
            self.G.remove(x)
        while len(self.S) + len(self.M) >= self.C:
            if not any(c not in pinned for c in self.contents()):
                return  # only this step's columns are left: x is not cached
            self._evict(pinned)
        if in_ghost or (self.lcs and not self.has_evicted and len(self.S) >= self.s_max):
            self.M.appendleft(x)
        else:
            self.S.appendleft(x)
        self.freq[x] = 0
        pinned.add(x)

    def _evict(self, pinned):
        m_unpinned = any(c not in pinned for c in self.M)
        if (len(self.M) > self.m_max or not self.S) and m_unpinned:
            while True:
                t = self.M.pop()
                if t in pinned:
                    self.M.appendleft(t)
                elif self.freq[t] >= 1:
                    self.freq[t] -= 1
                    self.M.appendleft(t)
                else:
                    del self.freq[t]
                    self.has_evicted = True
                    return
        while self.S:
            t = self.S.pop()
            if t in pinned or self.freq[t] >= 2:
                if t not in pinned:
                    self.freq[t] = 0
                self.M.appendleft(t)
            else:
                del self.freq[t]
                self.has_evicted = True
                if self.g_max > 0:
                    self.G.appendleft(t)
                    while len(self.G) > self.g_max:
                        self.G.pop()
                return


class ARCRef:
    """ARC as in the paper's Fig. 4 (Megiddo and Modha, FAST 2003), one request at a time, with the
    set-step rules of caches/arc.py (columns in use are passed over; a miss finding every cached
    column in use changes nothing)."""

    def __init__(self, capacity):
        self.c = int(capacity)
        self.p = 0.0
        # LRU first, MRU last
        self.T1: OrderedDict[int, None] = OrderedDict()
        self.T2: OrderedDict[int, None] = OrderedDict()
        self.B1: OrderedDict[int, None] = OrderedDict()
        self.B2: OrderedDict[int, None] = OrderedDict()

    def contents(self):
        return set(self.T1) | set(self.T2)

    def step(self, cols):
        cols = sorted(set(cols))
        hits = [x for x in cols if x in self.T1 or x in self.T2]
        for x in hits:                                   # Case I
            self.T1.pop(x, None)
            self.T2.pop(x, None)
            self.T2[x] = None
        in_use = set(cols)
        for x in cols:
            if x not in hits:
                self._miss(x, in_use)
        return set(hits)

    def _lru(self, lst, in_use):
        x = next(iter(lst), None)
        return None if x is None or x in in_use else x

    def _replace(self, x, in_use):
        t1 = len(self.T1)
        take_t1 = (t1 > 0 and (t1 > self.p or (x in self.B2 and t1 == self.p))) or not self.T2
        if take_t1 and self._lru(self.T1, in_use) is None:
            take_t1 = False
        elif not take_t1 and self._lru(self.T2, in_use) is None:
            take_t1 = True
        src, ghost = (self.T1, self.B1) if take_t1 else (self.T2, self.B2)
        v = self._lru(src, in_use)
        del src[v]
        ghost[v] = None

    def _miss(self, x, in_use):
        c = self.c
        if c == 0:
            return
        full = len(self.T1) + len(self.T2) >= c
        if full and self._lru(self.T1, in_use) is None and self._lru(self.T2, in_use) is None:
            return                                       # everything cached is in use
        if x in self.B1:                                 # Case II
            self.p = min(float(c), self.p + max(len(self.B2) / len(self.B1), 1.0))
            if full:
                self._replace(x, in_use)
            del self.B1[x]
            self.T2[x] = None
        elif x in self.B2:                               # Case III
            self.p = max(0.0, self.p - max(len(self.B1) / len(self.B2), 1.0))
            if full:
                self._replace(x, in_use)
            del self.B2[x]
            self.T2[x] = None
        else:                                            # Case IV
            if full:
                if len(self.T1) + len(self.B1) >= c:     # A
                    if len(self.T1) < c:
                        self.B1.popitem(last=False)
                        self._replace(x, in_use)
                    else:
                        self.T1.popitem(last=False)
                else:                                    # B
                    if len(self.T1) + len(self.T2) + len(self.B1) + len(self.B2) >= 2 * c and self.B2:
                        self.B2.popitem(last=False)
                    self._replace(x, in_use)
            self.T1[x] = None


def run_reference(make_ref, masks) -> list[list[set[int]]]:
    """Replay ``masks [T, L, N]`` through one reference cache per layer; hits per step and layer."""
    import numpy as np

    masks = np.asarray(masks)
    T, L, _ = masks.shape
    caches = [make_ref(layer) for layer in range(L)]
    return [[caches[layer].step(np.flatnonzero(masks[t, layer]).tolist()) for layer in range(L)] for t in range(T)]


def run_sequential_reference(make_ref, masks) -> list[list[set[int]]]:
    """The ``sequential`` step model: every step's columns requested one at a time, in ascending
    index order, through one reference cache per layer; the per-request hits of each step."""
    import numpy as np

    masks = np.asarray(masks)
    T, L, _ = masks.shape
    caches = [make_ref(layer) for layer in range(L)]
    def one_token(cache, cols):   # a policy whose window counts tokens says how (WindowRef)
        own = getattr(cache, "sequential_step", None)
        return own(cols) if own is not None else {c for c in cols if cache.step([c])}

    return [[one_token(caches[layer], np.flatnonzero(masks[t, layer]).tolist()) for layer in range(L)]
            for t in range(T)]
