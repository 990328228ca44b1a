"""Plugin sources the plugin tests write into folders outside the repository.

``POLICIES`` defines a cache-aware masking policy and a cache policy in plain Python: the end-to-end
test loads it as a plugin (a file in a temporary folder) in subprocesses and registers the very same
source in the test process the way a built-in module registers itself, and compares the rows.
``BROKEN`` holds plugins that must fail to load, each with a piece of the one-line message.
"""
from __future__ import annotations

POLICIES = '''
from dataclasses import dataclass

import numpy as np

from common.params import number, param
from simulator.caches import PythonCache, register_cache
from simulator.kernels import topk_mask
from simulator.masking import MaskingPolicy, register_masking


@register_masking("t-sticky")
@dataclass(frozen=True)
class Sticky(MaskingPolicy):
    """top-k of |a| * (1 + bonus) for cached columns, |a| for the others (cache-aware, in Python)."""
    bonus: float = param(0.5, number(0, 10), "t-sticky: score bonus of cached columns", metavar="B")

    cache_aware = True

    def _select(self, scores, resident, k):
        return topk_mask(np.where(resident, scores * (1.0 + self.bonus), scores), k)


@register_cache("t-mru")
class MRU(PythonCache):
    """most recently used goes first (a scan-resistant toy)"""
    def __init__(self, n_layers, n_columns, capacity, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        self.last = np.zeros((self.L, self.N), dtype=np.int64)

    def on_access(self, layer, cols, hits, t):
        self.last[layer, cols] = t

    def evict_order(self, layer, cols, t):
        return cols[np.lexsort((cols, -self.last[layer, cols]))]
'''

_HEAD = '''
from dataclasses import dataclass
import numpy as np
from common.params import number, param
from simulator.masking import MaskingPolicy, register_masking
from simulator.caches import CachePolicy, PythonCache, register_cache
from simulator.allocation import Allocation, register_allocation
'''


def _masking(name: str, body: str, fields: str = "") -> str:
    return _HEAD + f'''
@register_masking("{name}")
@dataclass(frozen=True)
class P(MaskingPolicy):
{fields or "    pass"}
{body}
'''


#: (file name, source, a piece of the one-line error)
BROKEN = [
    ("syntax.py", "def f(:\n", "cannot import it: SyntaxError"),
    ("raises.py", "import numpy\nx = 1\nraise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here (line 3)"),
    ("missing_import.py", "import no_such_module_dipsim\n", "ModuleNotFoundError"),
    ("nothing.py", "import numpy as np\n", "registers nothing"),
    ("shadow.py", _masking("dip", "    def _select(self, s, r, k): return s > 0"),
     "masking policy 'dip' is already registered (by simulator.masking.dip)"),
    ("shadow_cache.py", _HEAD + '\n@register_cache("lru")\nclass C(PythonCache):\n    pass\n',
     "cache policy 'lru' is already registered"),
    ("no_select.py", _masking("b-noselect", ""), "does not implement _select"),
    ("int_mask.py", _masking("b-int", "    def _select(self, s, r, k): return (s > 0.5).astype(int)"),
     "select must return a bool array of shape [2, 16], got int64"),
    ("bad_shape.py", _masking("b-shape", "    def _select(self, s, r, k): return np.ones((3, 3), bool)"),
     "select must return a bool array of shape [2, 16], got bool [3, 3]"),
    ("crash.py", _masking("b-crash", "    def _select(self, s, r, k): return s[99] > 0"),
     "fails its load-time probe (2 layers x 16 columns): IndexError"),
    ("plain_field.py", _masking("b-field", "    def _select(self, s, r, k): return s > 0", "    alpha: float = 0.3"),
     "field 'alpha' is not declared with common.params.param"),
    ("no_default.py", _masking("b-nodef", "    def _select(self, s, r, k): return s > 0",
                               "    alpha: float = param(None, number(0, 1), 'a')"), "fails its load-time probe"),
    ("reserved.py", _masking("b-res", "    def _select(self, s, r, k): return s > 0",
                             "    cache: float = param(0.5, number(0, 1), 'a')"), "parameter 'cache' is also a run parameter"),
    ("not_dataclass.py", _HEAD + '\n@register_masking("b-nodc")\nclass P:\n    pass\n', "is not a subclass of"),
    ("no_order.py", _HEAD + '\n@register_cache("b-noorder")\nclass C(PythonCache):\n    pass\n',
     "does not implement evict_order"),
    ("bad_order.py", _HEAD + '\n@register_cache("b-order")\nclass C(PythonCache):\n'
                              '    def evict_order(self, layer, cols, t): return cols[:1]\n',
     "evict_order must return the"),
    ("raw_cache.py", _HEAD + '\n@register_cache("b-raw")\nclass C(CachePolicy):\n    pass\n', "does not implement _step_rows"),
    ("cache_required.py", _HEAD + '\n@register_cache("b-req")\nclass C(PythonCache):\n'
                                  '    def __init__(self, n_layers, n_columns, capacity, size, step_model="set"):\n'
                                  '        super().__init__(n_layers, n_columns, capacity, step_model)\n'
                                  '    def evict_order(self, layer, cols, t): return cols\n',
     "parameter 'size' of __init__ has no default"),
    ("over_budget.py", _HEAD + '\n@register_allocation("b-greedy")\n@dataclass(frozen=True)\nclass A(Allocation):\n'
                               '    def split(self, groups, L, budget, calib):\n'
                               '        return {g.name: np.full(L, g.n_columns) for g in groups}\n',
     "allocation 'b-greedy' spends"),
]
