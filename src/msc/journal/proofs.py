"""Inclusion proofs for many records in one streaming pass over the leaf hashes.

RFC 6962 PATH(m, D[n]) consists of the hashes of subtrees that are either *perfect* aligned
subtrees (size a power of two, starting at a multiple of it) or *suffixes* [k, n) of the tree,
which are unions of the nodes of the final frontier. So one pass that remembers the perfect
subtrees it completes (only those some proof needs) plus the final frontier answers every proof,
in O(n) hashing and O(log n + wanted) memory — no 300 MB of tree levels for a 10 M record journal.
"""

from __future__ import annotations

from collections.abc import Iterable

from msc.journal.merkle import node_hash


def path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtree ranges [lo, hi) whose hashes form PATH(index, D[size]), bottom-up."""
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        n = hi - lo
        k = 1 << ((n - 1).bit_length() - 1)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def _is_perfect(lo: int, hi: int) -> bool:
    n = hi - lo
    return n & (n - 1) == 0 and lo % n == 0


def proofs(leaves: Iterable[bytes], size: int, indices: list[int]) -> tuple[bytes, dict[int, list[bytes]]]:
    """Stream ``size`` leaf hashes; return (root, {index: proof})."""
    wanted_ranges = {i: path_ranges(i, size) for i in indices}
    perfect_wanted = {r for rs in wanted_ranges.values() for r in rs if _is_perfect(*r)}
    known: dict[tuple[int, int], bytes] = {}
    stack: list[tuple[int, int, bytes]] = []  # (lo, size, hash), sizes strictly decreasing
    count = 0
    for leaf in leaves:
        if count >= size:
            break
        node = (count, 1, leaf)
        if (count, count + 1) in perfect_wanted:
            known[(count, count + 1)] = leaf
        while stack and stack[-1][1] == node[1]:
            left = stack.pop()
            node = (left[0], left[1] * 2, node_hash(left[2], node[2]))
            r = (node[0], node[0] + node[1])
            if r in perfect_wanted:
                known[r] = node[2]
        stack.append(node)
        count += 1
    if count != size:
        raise ValueError(f"only {count} leaves for a tree of size {size}")

    def suffix_hash(lo: int) -> bytes:
        nodes = [h for (nlo, _n, h) in stack if nlo >= lo]
        acc = nodes[-1]
        for h in reversed(nodes[:-1]):
            acc = node_hash(h, acc)
        return acc

    root = suffix_hash(0)
    out = {}
    for i, ranges in wanted_ranges.items():
        out[i] = [known[r] if r in known else suffix_hash(r[0]) for r in ranges]
    return root, out
