"""RFC 6962 Merkle tree hashing against the published Certificate Transparency test vectors."""

from __future__ import annotations

import pytest

from msc.journal import merkle

# The reference leaves and tree heads used by the CT implementations (RFC 6962 test data).
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (index, size, path) from the same test data
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


@pytest.mark.parametrize("n", range(len(ROOTS)))
def test_roots_match_rfc6962_vectors(n):
    hashes = [merkle.leaf_hash(d) for d in LEAVES[:n]]
    assert merkle.root_of(hashes).hex() == ROOTS[n]
    assert merkle.mth(LEAVES[:n]).hex() == ROOTS[n]


@pytest.mark.parametrize("index,size,path", INCLUSION)
def test_inclusion_proofs_match_vectors(index, size, path):
    hashes = [merkle.leaf_hash(d) for d in LEAVES[:size]]
    levels = merkle.build_levels(hashes)
    assert [p.hex() for p in merkle.inclusion_proof(levels, index)] == path
    root = bytes.fromhex(ROOTS[size])
    assert merkle.verify_inclusion(hashes[index], index, size, [bytes.fromhex(p) for p in path], root)


def test_frontier_equals_recursive_definition_for_every_size():
    data = [bytes([i, i * 7 % 256]) for i in range(70)]
    f = merkle.Frontier()
    for n in range(1, len(data) + 1):
        f.append(merkle.leaf_hash(data[n - 1]))
        assert f.root() == merkle.mth(data[:n])
        # Serialising the frontier (as checkpoints do) and resuming gives the same tree.
        g = merkle.Frontier.from_bytes(f.size, f.to_bytes())
        assert g.root() == f.root()


def test_every_inclusion_proof_verifies_and_wrong_ones_do_not():
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(37)]
    for n in range(1, 38):
        levels = merkle.build_levels(hashes[:n])
        root = levels[-1][0]
        assert root == merkle.root_of(hashes[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(levels, i)
            assert merkle.verify_inclusion(hashes[i], i, n, proof, root)
            assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), i, n, proof, root)
            if n > 1:
                assert not merkle.verify_inclusion(hashes[i], (i + 1) % n, n, proof, root)
