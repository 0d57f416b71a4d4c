"""One walk of the event along the field paths of all patterns at once, giving bitsets.

The paths every pattern names form one trie (shared prefixes are read once).  Walking the
event along it yields the bits of the conjunctions that *cannot* match: a field they need is
missing or holds no satisfying value, or a field they need absent holds a value.  Per event
this costs one dict lookup per trie edge present in the event plus the leaf lookups of
:mod:`router.filters.leaves`: it depends on the event and on the distinct paths named, not
on how many patterns name them.

Arrays are where the walk is only an approximation: below an array it collects, per path,
the bits satisfied by any element (a superset of the array-consistent answer) and leaves
``exists: false`` alone.  The conjunctions concerned come back marked *uncertain* and are
checked exactly (see :mod:`router.filters.compile`), so approximations only ever cost a
check, never an answer.  Everywhere else the walk is exact.

The result is one integer: the ruled-out bits, plus the uncertain bits shifted left by the
number of conjunctions (``shift``), so that both travel through the walk as one OR.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.filters.leaves import Bits, FieldIndex, LeafBits
from router.filters.spec import MISSING, RawText


def dotted_view(obj: dict[str, Any], key: str) -> Any:
    """Event keys written with dots (``{"a.b": 1}``) stand for nested ones (``a`` → ``b``).

    Only consulted when the plain key is missing; the join is a C-speed test that the dict has
    a dotted key at all, so ordinary events pay one cheap check per missing key.
    """
    if "." not in "".join(obj):
        return MISSING
    head = key + "."
    view = {k[len(head) :]: v for k, v in obj.items() if k.startswith(head)}
    return view if view else MISSING


def _no_bits(v: Any) -> Bits:
    return 0


@dataclass(slots=True)
class PathNode:
    """One field path of the trie: the conditions there, and the paths below."""

    path_id: int
    index: FieldIndex | None = None
    need: Bits = 0  # conjunctions with a positive condition at exactly this path
    absent: Bits = 0  # conjunctions with exists: false at exactly this path
    children: dict[str, PathNode] = field(default_factory=dict)
    _leaf_bits: tuple[LeafBits, LeafBits, LeafBits] | None = None

    def leaf_bits(self) -> tuple[LeafBits, LeafBits, LeafBits]:
        """The index's (str, number, other) lookups, compiled once (all 0 without tests)."""
        if self._leaf_bits is None:
            if self.index is None:
                self._leaf_bits = (_no_bits, _no_bits, _no_bits)
            else:
                self._leaf_bits = self.index.compile()
        return self._leaf_bits

    def need_below(self) -> Bits:
        """Positive conditions at this path or under it."""
        bits = self.need
        for child in self.children.values():
            bits |= child.need_below()
        return bits

    def any_below(self) -> Bits:
        """Any condition strictly under this path."""
        bits = 0
        for child in self.children.values():
            bits |= child.need | child.absent | child.any_below()
        return bits

    def array_sensitive(self) -> Bits:
        """Conjunctions whose answer under an array at this path the walk cannot give exactly:
        those with two or more conditions at or under it (they must hold in one element),
        or with an ``exists: false`` there.  With one positive condition, "any element"
        is the exact answer."""
        once = twice = absent = 0
        stack = [self]
        while stack:
            node = stack.pop()
            absent |= node.absent
            for bits in (node.need, node.absent):
                twice |= once & bits
                once |= bits
            stack.extend(node.children.values())
        return twice | absent

    def positives(self) -> list[tuple[int, Bits]]:
        """``(path_id, need)`` of every path at or under this one with positive conditions."""
        out = [(self.path_id, self.need)] if self.need else []
        for child in self.children.values():
            out.extend(child.positives())
        return out


Fails = Callable[[Any], Bits]
Collect = Callable[[Any, dict[int, Bits]], None]


def _child_value(v: dict[str, Any], key: str) -> Any:
    cv = v.get(key, MISSING)
    if cv is MISSING:
        return dotted_view(v, key)
    return cv


def _string_lookup(node: PathNode) -> tuple[Any, Bits, bool, Any]:
    """``(table, mask, complement, str_bits)``: the table when one lookup does, for inlining."""
    found = node.index.string_table() if node.index is not None else None
    if found is None:
        return None, 0, False, node.leaf_bits()[0]
    return (*found, node.leaf_bits()[0])


def _dotted(v: dict[str, Any], kids: tuple[tuple[str, Bits, Fails], ...]) -> Bits:
    """The children of an object that has dotted keys (rare: the slow, general way)."""
    fails = 0
    for key, child_need, child in kids:
        cv = _child_value(v, key)
        fails |= child_need if cv is MISSING else child(cv)
    return fails


def collector(node: PathNode) -> Collect:
    """Accumulate, per path id, the bits satisfied by any leaf under an array."""
    kids = tuple((key, collector(child)) for key, child in node.children.items())
    str_bits, num_bits, other_bits = node.leaf_bits()
    node_has_tests = node.index is not None
    path_id = node.path_id

    def collect(v: Any, sat: dict[int, Bits]) -> None:
        t = type(v)
        if t is dict:
            for key, child in kids:
                cv = _child_value(v, key)
                if cv is not MISSING:
                    child(cv, sat)
            return
        if t is list:
            for element in v:
                collect(element, sat)
            return
        if node_has_tests is False:
            return
        if t is str:
            bits = str_bits(v)
        elif t is int or t is float:
            bits = num_bits(v)
        elif v is None or t is bool:
            bits = other_bits(v)
        elif t is RawText:
            bits = str_bits(str(v))
        else:
            return
        if bits:
            sat[path_id] = sat.get(path_id, 0) | bits

    return collect


def gatherer(node: PathNode) -> Fails:
    """The OR of the bits satisfied by every leaf under this node: below an array where only
    one path has (positive) conditions, that is the whole answer, without per-path sets."""
    kids = tuple(
        (key, gatherer(child)) for key, child in node.children.items() if child.need_below()
    )
    str_bits, num_bits, other_bits = node.leaf_bits()
    node_has_tests = node.need != 0

    def gather(v: Any) -> Bits:
        t = type(v)
        if t is str:
            return str_bits(v) if node_has_tests else 0
        if t is dict:
            bits = 0
            for key, child in kids:
                cv = v.get(key, MISSING)
                if cv is MISSING:
                    cv = dotted_view(v, key)
                    if cv is MISSING:
                        continue
                bits |= child(cv)
            return bits
        if t is list:
            bits = 0
            for element in v:
                bits |= gather(element)
            return bits
        if not node_has_tests:
            return 0
        if t is int or t is float:
            return num_bits(v)
        if v is None or t is bool:
            return other_bits(v)
        if t is RawText:
            return str_bits(str(v))
        return 0

    return gather


def failures(node: PathNode, shift: int) -> Fails:
    """The function giving, for the event value at this node's path, the ruled-out bits (and
    the uncertain ones, shifted left by ``shift``)."""
    kids = tuple(
        (key, child.need_below(), failures(child, shift)) for key, child in node.children.items()
    )
    children_need = 0
    for child in node.children.values():
        children_need |= child.need_below()
    str_bits, num_bits, other_bits = node.leaf_bits()
    has_leaf_tests = node.index is not None
    need, absent = node.need, node.absent
    below = node.any_below()
    collect = collector(node)
    positives = tuple(node.positives())
    uncertain = node.array_sensitive() << shift
    need_below_all = node.need_below()

    def under_array(v: list[Any]) -> Bits:
        sat: dict[int, Bits] = {}
        collect(v, sat)
        fails = uncertain
        for path_id, needed in positives:
            fails |= needed & ~sat.get(path_id, 0)
        return fails

    if len(positives) == 1 and not uncertain and not (node.absent or below & ~need_below_all):
        # One path with conditions under here (and no exists: false): any element will do.
        gather = gatherer(node)
        ((_, single_need),) = positives

        def under_array(v: list[Any]) -> Bits:
            return single_need & ~gather(v)

    if not kids:
        # A leaf path, the usual case: checked inline per JSON type.
        def leaf(v: Any) -> Bits:
            t = type(v)
            if t is str:
                return (need & ~str_bits(v)) | absent
            if t is int or t is float:
                return (need & ~num_bits(v)) | absent
            if v is None or t is bool:
                return (need & ~other_bits(v)) | absent
            if t is list:
                return under_array(v)
            if t is RawText:
                return (need & ~str_bits(str(v))) | absent
            return need  # an object holds no leaf value here

        return leaf

    # Children that are leaf paths are looked up inline (strings and numbers, the common
    # case): one call less per field.  Those whose strings need one dict lookup (exact
    # values, or a plain anything-but complement) are taken apart from the others.
    table_kids = []
    function_kids = []
    for (key, _, fn), child in zip(kids, node.children.values(), strict=True):
        if child.children:
            continue
        table, mask, complement, str_bits_of_child = _string_lookup(child)
        if table is not None:
            table_kids.append((key, child.need, child.absent, table, mask, complement, fn))
        else:
            function_kids.append(
                (key, child.need, child.absent, str_bits_of_child, child.leaf_bits()[1], fn)
            )
    table_leaves = tuple(table_kids)
    function_leaves = tuple(function_kids)
    deep_kids = tuple(
        kid for kid, child in zip(kids, node.children.values(), strict=True) if child.children
    )

    def inner(v: Any) -> Bits:
        t = type(v)
        if t is dict:
            fails = need  # an object is no leaf value for this path's own tests
            plain = False  # set once the object is known to have no dotted keys
            get = v.get
            for key, child_need, child_absent, table, mask, complement, child in table_leaves:
                cv = get(key, MISSING)
                if cv is MISSING:
                    if not plain:
                        if "." in "".join(v):
                            return need | _dotted(v, kids)
                        plain = True
                    fails |= child_need
                elif type(cv) is str:
                    if complement:
                        fails |= (child_need & ~(mask & ~table.get(cv, 0))) | child_absent
                    else:
                        fails |= (child_need & ~table.get(cv, 0)) | child_absent
                else:
                    fails |= child(cv)
            for key, child_need, child_absent, child_str, child_num, child in function_leaves:
                cv = get(key, MISSING)
                if cv is MISSING:
                    if not plain:
                        if "." in "".join(v):
                            return need | _dotted(v, kids)
                        plain = True
                    fails |= child_need
                    continue
                tc = type(cv)
                if tc is str:
                    fails |= (child_need & ~child_str(cv)) | child_absent
                elif tc is int or tc is float:
                    fails |= (child_need & ~child_num(cv)) | child_absent
                else:
                    fails |= child(cv)
            for key, child_need, child in deep_kids:
                cv = get(key, MISSING)
                if cv is MISSING:
                    if not plain:
                        if "." in "".join(v):
                            return need | _dotted(v, kids)
                        plain = True
                    fails |= child_need
                else:
                    fails |= child(cv)
            return fails
        if t is list:
            return under_array(v)
        # A scalar where the patterns look for an object: nothing below it exists.
        fails = children_need
        if t is RawText:
            fails |= below  # nothing can be looked up inside a payload that is not JSON
            v = str(v)
            t = str
        if not has_leaf_tests:
            return fails
        if t is str:
            return fails | (need & ~str_bits(v)) | absent
        if t is int or t is float:
            return fails | (need & ~num_bits(v)) | absent
        if v is None or t is bool:
            return fails | (need & ~other_bits(v)) | absent
        return fails | need

    return inner
