"""RFC 6962 Merkle tree hashing (Certificate Transparency), for tamper evidence.

    leaf = SHA-256(0x00 || record bytes)
    node = SHA-256(0x01 || left || right)
    MTH(D[n]) splits at the largest power of two smaller than n (RFC 6962 §2.1).

:class:`Frontier` keeps the O(log n) roots of the perfect subtrees covering the leaves seen so
far, so the writer can append in O(1) amortized and produce a checkpoint root at any time.
The inclusion proof and its verifier follow RFC 9162 §2.1.3 (the same tree as RFC 6962).
This module is deliberately standard-library only: the export bundle's stand-alone verifier
script embeds the same algorithms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """Incremental Merkle tree: the roots of the perfect subtrees, largest (leftmost) first."""

    __slots__ = ("size", "_nodes")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ValueError("frontier does not match tree size")
        self.size = size
        self._nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf *hash*."""
        node = leaf
        n = self.size
        # Merge with the right-most subtrees of equal height: one per trailing 1 bit of n.
        while n & 1:
            node = node_hash(self._nodes.pop(), node)
            n >>= 1
        self._nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        it = reversed(self._nodes)
        acc = next(it)
        for node in it:
            acc = node_hash(node, acc)
        return acc

    def copy(self) -> Frontier:
        return Frontier(self.size, self._nodes)

    def to_bytes(self) -> bytes:
        return b"".join(self._nodes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        nodes = [data[i : i + 32] for i in range(0, len(data), 32)]
        return cls(size, nodes)


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH over leaf hashes."""
    f = Frontier()
    for leaf in leaves:
        f.append(leaf)
    return f.root()


def mth(data: Sequence[bytes]) -> bytes:
    """The RFC 6962 definition, recursively, over raw leaf *inputs* (used to test the rest)."""
    n = len(data)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(data[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(mth(data[:k]), mth(data[k:]))


def build_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree over ``leaves`` (leaf hashes).

    Pairing adjacent nodes and promoting a trailing odd node unchanged yields exactly the
    RFC 6962 tree, because its left subtrees are always perfect.
    """
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [node_hash(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def inclusion_proof(levels: list[list[bytes]], index: int) -> list[bytes]:
    """PATH(index, D[n]) for the tree given by :func:`build_levels`."""
    proof = []
    i = index
    for level in levels[:-1]:
        sib = i ^ 1
        if sib < len(level):
            proof.append(level[sib])
        i >>= 1
    return proof


# The bundle's stand-alone verifier is the one implementation of the RFC 9162 check: what msc
# tests here is exactly what a court runs.
from msc.journal.bundle_verifier import verify_inclusion  # noqa: E402, F401  (re-exported)
