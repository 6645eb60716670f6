use super::*;

fn h(text: &str) -> Hash {
    let bytes = from_hex(text).unwrap();
    bytes.try_into().unwrap()
}

// Known-answer vectors from transparency-dev/merkle (testonly/constants.go and proof/verify_test.go), originally
// from the Certificate Transparency C++/Go implementations of RFC 6962.
fn kat_leaf_inputs() -> Vec<Vec<u8>> {
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
        .iter()
        .map(|x| from_hex(x).unwrap())
        .collect()
}

const KAT_LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

const KAT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

// (index, size, proof); Go's vectors give 1-based leaf numbers, these are 0-based indices.
const KAT_INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

// (old size, new size, proof).
const KAT_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn kat_leaves() -> Vec<Hash> {
    kat_leaf_inputs().iter().map(|d| leaf_hash(d)).collect()
}

/// Distinct leaf hashes for the exhaustive tests.
fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(format!("record {i}").as_bytes())).collect()
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    let empty: Hash = Sha256::digest(b"").into();
    assert_eq!(EMPTY_ROOT, empty);
    assert_eq!(merkle_tree_hash(&[]), EMPTY_ROOT);
    assert_eq!(CompactTree::new().root(), EMPTY_ROOT);
    assert_eq!(MemoryTree::new().root(), EMPTY_ROOT);
    assert_eq!(hex(&EMPTY_ROOT), KAT_ROOTS[0]);
}

#[test]
fn known_leaf_hashes_and_roots() {
    let leaves = kat_leaves();
    for (leaf, want) in leaves.iter().zip(KAT_LEAF_HASHES) {
        assert_eq!(hex(leaf), want);
    }
    for (size, want) in KAT_ROOTS.iter().enumerate() {
        assert_eq!(hex(&merkle_tree_hash(&leaves[..size])), *want, "MTH of {size} leaves");
        let compact = CompactTree::from_leaves(&leaves[..size]).unwrap();
        assert_eq!(hex(&compact.root()), *want, "compact root of {size} leaves");
        assert_eq!(hex(&MemoryTree::from_leaves(&leaves).root_at(size as u64).unwrap()), *want);
    }
}

#[test]
fn known_compact_tree_frontiers() {
    // testonly.CompactTrees(): the frontier of each tree size is the listed node hashes.
    let leaves = kat_leaves();
    let n = |level: usize, index: usize| -> Hash {
        let width = 1 << level;
        merkle_tree_hash(&leaves[index * width..(index + 1) * width])
    };
    let want: [Vec<Hash>; 9] = [
        vec![],
        vec![n(0, 0)],
        vec![n(1, 0)],
        vec![n(1, 0), n(0, 2)],
        vec![n(2, 0)],
        vec![n(2, 0), n(0, 4)],
        vec![n(2, 0), n(1, 2)],
        vec![n(2, 0), n(1, 2), n(0, 6)],
        vec![n(3, 0)],
    ];
    assert_eq!(hex(&n(1, 1)), "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e");
    assert_eq!(hex(&n(1, 2)), "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a");
    assert_eq!(hex(&n(1, 3)), "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0");
    assert_eq!(hex(&n(2, 1)), "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4");
    for (size, frontier) in want.iter().enumerate() {
        assert_eq!(CompactTree::from_leaves(&leaves[..size]).unwrap().frontier(), frontier.as_slice());
    }
}

#[test]
fn known_inclusion_proofs() {
    let leaves = kat_leaves();
    let memory = MemoryTree::from_leaves(&leaves);
    for (index, size, want) in KAT_INCLUSION {
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(inclusion_proof(&leaves[..], index, size).unwrap(), want, "proof {index} in {size}");
        assert_eq!(inclusion_proof(&memory, index, size).unwrap(), want);
        let root = h(KAT_ROOTS[size as usize]);
        verify_inclusion(&leaves[index as usize], index, size, &want, &root).unwrap();
    }
    // Size 1: the empty proof, and the leaf is the root.
    assert!(inclusion_proof(&leaves[..], 0, 1).unwrap().is_empty());
    verify_inclusion(&leaves[0], 0, 1, &[], &leaves[0]).unwrap();
}

#[test]
fn known_consistency_proofs() {
    let leaves = kat_leaves();
    for (old, new, want) in KAT_CONSISTENCY {
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(consistency_proof(&leaves[..], old, new).unwrap(), want, "proof {old} -> {new}");
        let (old_root, new_root) = (h(KAT_ROOTS[old as usize]), h(KAT_ROOTS[new as usize]));
        verify_consistency(old, new, &old_root, &new_root, &want).unwrap();
    }
}

#[test]
fn go_corruption_probes_on_known_vectors() {
    // The probes of transparency-dev/merkle proof/verify_test.go corruptInclusionProof, all of which must fail.
    let leaves = kat_leaves();
    let some_hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, proof) in KAT_INCLUSION {
        let proof: Vec<Hash> = proof.iter().map(|x| h(x)).collect();
        let root = h(KAT_ROOTS[size as usize]);
        let leaf = leaves[index as usize];
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (index.wrapping_sub(1), size, root, leaf, proof.clone()),
            (index + 1, size, root, leaf, proof.clone()),
            (index ^ 2, size, root, leaf, proof.clone()),
            (index, size * 2, root, leaf, proof.clone()),
            (index, size / 2, root, leaf, proof.clone()),
            (index, size, root, leaf_hash(b"WrongLeaf"), proof.clone()),
            (index, size, EMPTY_ROOT, leaf, proof.clone()),
            (index, size, some_hash, leaf, proof.clone()),
            (index, size, root, leaf, [proof.clone(), vec![root]].concat()),
            (index, size, root, leaf, [vec![root], proof.clone()].concat()),
            (index, size, root, leaf, proof[..proof.len() - 1].to_vec()),
        ];
        if proof.len() > 1 {
            probes.push((index, size, root, leaf, [vec![proof[0], some_hash], proof[1..].to_vec()].concat()));
        }
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            wrong[i][0] ^= 8;
            probes.push((index, size, root, leaf, wrong));
        }
        for (n, (i, s, r, l, p)) in probes.iter().enumerate() {
            assert!(verify_inclusion(l, *i, *s, p, r).is_err(), "probe {n} of proof {index} in {size} verified");
        }
    }
}

#[test]
fn go_edge_cases() {
    let some_hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size) in [(0, 0), (1, 0), (2, 1)] {
        assert_eq!(
            verify_inclusion(&some_hash, index, size, &[], &EMPTY_ROOT),
            Err(MerkleError::IndexOutOfRange { index, size })
        );
    }
    assert!(verify_inclusion(&some_hash, 0, 1, &[], &EMPTY_ROOT).is_err());
    let (r1, r2) = (leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2"));
    verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]).unwrap();
    verify_consistency(0, 1, &EMPTY_ROOT, &r2, &[]).unwrap();
    verify_consistency(1, 1, &r2, &r2, &[]).unwrap();
    assert!(verify_consistency(0, 0, &r1, &r2, &[]).is_err());
    assert!(verify_consistency(1, 1, &r1, &r2, &[]).is_err());
    assert!(matches!(verify_consistency(1, 0, &r1, &r2, &[]), Err(MerkleError::SizeDecreased { .. })));
    assert!(matches!(verify_consistency(2, 1, &r1, &r2, &[]), Err(MerkleError::SizeDecreased { .. })));
    assert!(matches!(verify_consistency(1, 2, &r1, &r2, &[]), Err(MerkleError::ProofTooShort { .. })));
    for (old, new) in [(0, 0), (0, 1), (1, 1)] {
        assert!(matches!(
            verify_consistency(old, new, &EMPTY_ROOT, &EMPTY_ROOT, &[EMPTY_ROOT]),
            Err(MerkleError::UnexpectedProof { .. })
        ));
    }
    // Size 0 has exactly one root (stricter than Go, which takes any old root for size 0).
    assert!(matches!(verify_consistency(0, 1, &r1, &r2, &[]), Err(MerkleError::OldRootMismatch { .. })));
    // Over-long proofs are refused before hashing.
    let long = vec![EMPTY_ROOT; MAX_PROOF_LEN + 1];
    assert!(matches!(verify_inclusion(&r1, 0, 2, &long, &r2), Err(MerkleError::ProofOverBound { .. })));
    assert!(matches!(verify_consistency(1, 2, &r1, &r2, &long), Err(MerkleError::ProofOverBound { .. })));
}

#[test]
fn every_inclusion_proof_up_to_64_verifies_and_tampering_fails() {
    let all = leaves(65);
    let memory = MemoryTree::from_leaves(&all);
    for size in 1..=64u64 {
        let tree = &all[..size as usize];
        let root = merkle_tree_hash(tree);
        for index in 0..size {
            let leaf = tree[index as usize];
            let proof = inclusion_proof(tree, index, size).unwrap();
            assert_eq!(inclusion_proof(&memory, index, size).unwrap(), proof);
            assert!(proof.len() <= 7);
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            // Flipped bits, anywhere in any element.
            for i in 0..proof.len() {
                for bit in [0usize, 77, 255] {
                    let mut wrong = proof.clone();
                    wrong[i][bit / 8] ^= 1 << (bit % 8);
                    assert!(verify_inclusion(&leaf, index, size, &wrong, &root).is_err());
                }
            }
            // Wrong leaf.
            let mut wrong_leaf = leaf;
            wrong_leaf[31] ^= 1;
            assert!(verify_inclusion(&wrong_leaf, index, size, &proof, &root).is_err());
            // Wrong index: every other index in the tree, and just past it.
            for other in (0..=size).filter(|&o| o != index) {
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err(), "{index} as {other}");
            }
            // Wrong size: no other tree size's root is proven by this proof.
            for other in (index + 1..=64).filter(|&o| o != size) {
                let other_root = merkle_tree_hash(&all[..other as usize]);
                assert!(verify_inclusion(&leaf, index, other, &proof, &other_root).is_err());
            }
            // Truncated, extended at either end, and an element dropped from the middle.
            if !proof.is_empty() {
                assert!(verify_inclusion(&leaf, index, size, &proof[..proof.len() - 1], &root).is_err());
                assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
            }
            if proof.len() > 2 {
                let dropped = [&proof[..1], &proof[2..]].concat();
                assert!(verify_inclusion(&leaf, index, size, &dropped, &root).is_err());
            }
            for extra in [root, EMPTY_ROOT, leaf] {
                let longer = [proof.clone(), vec![extra]].concat();
                assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
                let longer = [vec![extra], proof.clone()].concat();
                assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
            }
        }
    }
}

#[test]
fn same_root_other_size_is_a_documented_ambiguity() {
    // The size is bound only through the root: leaf 0's proof in a tree of 4 also "verifies" for size 3 against
    // the size-4 root. A verifier must take size and root together from one signed checkpoint.
    let all = leaves(4);
    let proof = inclusion_proof(&all[..], 0, 4).unwrap();
    let root4 = merkle_tree_hash(&all);
    assert!(verify_inclusion(&all[0], 0, 3, &proof, &root4).is_ok());
    assert!(verify_inclusion(&all[0], 0, 3, &proof, &merkle_tree_hash(&all[..3])).is_err());
}

#[test]
fn every_consistency_proof_up_to_64_verifies_and_tampering_fails() {
    let all = leaves(64);
    let roots: Vec<Hash> = (0..=64).map(|n| merkle_tree_hash(&all[..n])).collect();
    let memory = MemoryTree::from_leaves(&all);
    for new in 1..=64u64 {
        for old in 1..=new {
            let (old_root, new_root) = (roots[old as usize], roots[new as usize]);
            let proof = consistency_proof(&all[..], old, new).unwrap();
            assert_eq!(consistency_proof(&memory, old, new).unwrap(), proof);
            verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();
            if old == new {
                assert!(proof.is_empty());
                continue;
            }
            assert!(!proof.is_empty() && proof.len() <= 2 * 6 + 1);
            for i in 0..proof.len() {
                for bit in [4usize, 100, 250] {
                    let mut wrong = proof.clone();
                    wrong[i][bit / 8] ^= 1 << (bit % 8);
                    assert!(verify_consistency(old, new, &old_root, &new_root, &wrong).is_err());
                }
            }
            // Wrong roots.
            assert!(verify_consistency(old, new, &new_root, &old_root, &proof).is_err());
            assert!(verify_consistency(old, new, &roots[old as usize - 1], &new_root, &proof).is_err());
            assert!(verify_consistency(old, new, &old_root, &roots[new as usize - 1], &proof).is_err());
            // Wrong sizes, each with the right root for that size.
            for other in (1..=64u64).filter(|&o| o != old && o <= new) {
                assert!(
                    verify_consistency(other, new, &roots[other as usize], &new_root, &proof).is_err(),
                    "{old}->{new} as {other}->{new}"
                );
            }
            for other in (old..=64u64).filter(|&o| o != new) {
                assert!(
                    verify_consistency(old, other, &old_root, &roots[other as usize], &proof).is_err(),
                    "{old}->{new} as {old}->{other}"
                );
            }
            // Wrong sizes with the original roots (Go's probes).
            for (o, n) in [(old - 1, new), (old + 1, new), (old ^ 2, new), (old, new * 2), (old, new / 2)] {
                if (o, n) != (old, new) {
                    assert!(verify_consistency(o, n, &old_root, &new_root, &proof).is_err(), "{o}->{n}");
                }
            }
            // Truncated, extended, empty.
            assert!(verify_consistency(old, new, &old_root, &new_root, &proof[..proof.len() - 1]).is_err());
            assert!(verify_consistency(old, new, &old_root, &new_root, &[]).is_err());
            for extra in [old_root, new_root, EMPTY_ROOT, proof[0]] {
                let longer = [proof.clone(), vec![extra]].concat();
                assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
                let longer = [vec![extra], proof.clone()].concat();
                assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
            }
        }
    }
}

#[test]
fn compact_tree_matches_full_mth_up_to_200() {
    let all = leaves(200);
    let mut compact = CompactTree::new();
    let mut memory = MemoryTree::new();
    for size in 0..=200usize {
        let want = merkle_tree_hash(&all[..size]);
        assert_eq!(compact.root(), want, "size {size}");
        assert_eq!(memory.root(), want, "size {size}");
        assert_eq!(compact.frontier().len(), (size as u64).count_ones() as usize);
        // Persisting and reading back is lossless at every size.
        assert_eq!(CompactTree::from_bytes(&compact.to_bytes()).unwrap(), compact);
        assert_eq!(CompactTree::from_hex(&compact.to_hex()).unwrap(), compact);
        if size < 200 {
            assert_eq!(compact.append(all[size]).unwrap(), size as u64);
            assert_eq!(memory.push(all[size]), size as u64);
        }
    }
}

#[test]
fn compact_tree_encoding_refusals() {
    let tree = CompactTree::from_leaves(&leaves(5)).unwrap();
    let bytes = tree.to_bytes();
    assert_eq!(bytes.len(), COMPACT_TREE_HEADER_LEN + 2 * HASH_LEN);
    assert!(matches!(CompactTree::from_bytes(&bytes[..4]), Err(MerkleError::EncodingLength { .. })));
    assert!(matches!(CompactTree::from_bytes(&bytes[..bytes.len() - 1]), Err(MerkleError::EncodingLength { .. })));
    assert!(matches!(
        CompactTree::from_bytes(&[bytes.clone(), vec![0]].concat()),
        Err(MerkleError::EncodingLength { .. })
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 2;
    assert!(matches!(CompactTree::from_bytes(&wrong_version), Err(MerkleError::UnsupportedVersion { .. })));
    // A size whose popcount does not match the hashes present.
    let mut wrong_size = bytes.clone();
    wrong_size[8] = 7;
    assert!(matches!(CompactTree::from_bytes(&wrong_size), Err(MerkleError::EncodingLength { .. })));
    let text = tree.to_hex();
    assert!(matches!(CompactTree::from_hex(&text.to_uppercase()), Err(MerkleError::InvalidHex { .. })));
    assert!(matches!(CompactTree::from_hex(&text[1..]), Err(MerkleError::InvalidHex { .. })));
    assert!(matches!(CompactTree::from_hex(&format!("{text} ")), Err(MerkleError::InvalidHex { .. })));
    // Persisted state carries on exactly where it stopped.
    let mut resumed = CompactTree::from_hex(&text).unwrap();
    resumed.append(leaf_hash(b"next")).unwrap();
    let mut all = leaves(5);
    all.push(leaf_hash(b"next"));
    assert_eq!(resumed.root(), merkle_tree_hash(&all));
}

#[test]
fn source_refusals() {
    let all = leaves(10);
    assert_eq!(inclusion_proof(&all[..], 0, 11), Err(MerkleError::SizeBeyondSource { size: 11, available: 10 }));
    assert_eq!(inclusion_proof(&all[..], 10, 10), Err(MerkleError::IndexOutOfRange { index: 10, size: 10 }));
    assert_eq!(consistency_proof(&all[..], 5, 4), Err(MerkleError::SizeDecreased { old_size: 5, new_size: 4 }));
    assert!(consistency_proof(&all[..], 0, 10).unwrap().is_empty());
    struct Holey;
    impl LeafSource for Holey {
        fn leaf_count(&self) -> u64 {
            4
        }
        fn leaf_hash(&self, index: u64) -> Option<Hash> {
            (index != 2).then(|| leaf_hash(&index.to_be_bytes()))
        }
    }
    assert_eq!(inclusion_proof(&Holey, 0, 4), Err(MerkleError::LeafUnavailable { index: 2 }));
}
