//! Merkle trees over the audit log's records with RFC 9162 (Certificate Transparency v2) hashing, and the inclusion and
//! consistency proofs that let an auditor check one job's records, or that a later log extends an earlier one, without
//! trusting the log's keeper.
//!
//! Everything here follows RFC 9162 section 2.1 exactly, with SHA-256:
//!
//! - a leaf's hash is `SHA-256(0x00 || record bytes)` ([`leaf_hash`]);
//! - an interior node's hash is `SHA-256(0x01 || left || right)` ([`node_hash`]);
//! - the Merkle Tree Hash of `n > 1` leaves splits them at the largest power of two `k < n` and hashes the two halves'
//!   MTHs together; the MTH of no leaves is `SHA-256("")` ([`EMPTY_ROOT`], [`merkle_tree_hash`]);
//! - inclusion proofs are the RFC's `PATH` (2.1.3.1) and are checked with its algorithm (2.1.3.2)
//!   ([`inclusion_proof`], [`verify_inclusion`]);
//! - consistency proofs are the RFC's `PROOF`/`SUBPROOF` (2.1.4.1) and are checked with its algorithm (2.1.4.2)
//!   ([`consistency_proof`], [`verify_consistency`]).
//!
//! The log writer keeps a [`CompactTree`]: only the roots of the perfect subtrees along the tree's right edge (one per
//! set bit of the size), so an append costs O(log n) hashes (amortised O(1)), the root after it O(log n), and the state
//! it persists ([`CompactTree::to_bytes`]) is at most `1 + 8 + 64 * 32` bytes.
//!
//! Proofs are produced from any [`LeafSource`]: the leaf hashes may live in memory, in a file or in a database, and a
//! source may also hand out the hashes of perfect subtrees it has kept, so that a proof does not need to hash every
//! leaf. [`MemoryTree`] is such a source: it keeps the leaf hashes plus every subtree hash at each
//! [`CACHE_LEVEL_STRIDE`]-th level (about 1/15 more memory than the leaves), which bounds the work of one inclusion
//! proof to a few hundred hashes whatever the tree's size. A plain `[Hash]` slice is a source too, with no cache: a
//! proof from it hashes every leaf once (O(n)).
//!
//! # Size
//!
//! Over 600 lines: the RFC's hashing, its two proofs and their checks, and the two trees a writer and a prover keep
//! belong together (each proof's generation and its check mirror each other); the tests are in `merkle/tests.rs`.
//!
//! # Errors
//!
//! Every fallible function returns [`MerkleError`]. Proof verification fails, with a variant that says why, if the
//! index or sizes are out of range, if the proof is longer or shorter than the tree's shape requires, or if the hashes
//! do not lead to the roots given. Proof generation fails if the source holds fewer leaves than asked for or cannot
//! produce one of them. Decoding a persisted [`CompactTree`] fails on any length, version or hex error.
//!
//! # Security
//!
//! The leaf and node prefixes keep a leaf from being passed off as a subtree (second-preimage attacks on the tree).
//! Verification trusts nothing but the leaf hash, the index, the sizes and the roots it is given; in particular it
//! never trusts subtree hashes a [`LeafSource`] hands out: a source that lies only produces proofs that fail to verify.
//! Verification is safe on hostile input: proofs longer than [`MAX_PROOF_LEN`] are refused before any hashing, and the
//! work is linear in the proof's length. Roots and proofs are public values, so they are compared in variable time.
//! An inclusion proof binds the tree size only through the root: the same proof may verify for another size against
//! the same root, so a verifier must take the size and the root together from one signed checkpoint. A tree of size 0
//! has only one valid root, [`EMPTY_ROOT`], and [`verify_consistency`] insists on it (Go's `transparency-dev/merkle`
//! accepts any old root for size 0).

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Length in bytes of a SHA-256 hash, and so of every leaf, node and root hash here.
pub const HASH_LEN: usize = 32;

/// A leaf, node or root hash.
pub type Hash = [u8; HASH_LEN];

/// Domain-separation prefix of a leaf hash (RFC 9162 section 2.1.1).
pub const LEAF_PREFIX: u8 = 0x00;

/// Domain-separation prefix of an interior node hash (RFC 9162 section 2.1.1).
pub const NODE_PREFIX: u8 = 0x01;

/// The Merkle Tree Hash of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Longest proof accepted for verification: a tree of at most `u64::MAX` leaves is at most 64 levels deep, and neither
/// an inclusion nor a consistency proof needs more than one hash per level.
pub const MAX_PROOF_LEN: usize = 64;

/// Version byte that opens [`CompactTree::to_bytes`], so that a later format can be told apart.
pub const COMPACT_TREE_VERSION: u8 = 1;

/// Length of the fixed header of [`CompactTree::to_bytes`]: the version byte and the tree size as a big-endian `u64`.
pub const COMPACT_TREE_HEADER_LEN: usize = 1 + 8;

/// [`MemoryTree`] keeps the hashes of the perfect subtrees at every level that is a multiple of this (4: subtrees of
/// 16, 256, 4096, ... leaves). A perfect subtree that is not kept is recomputed from the at most `2^(stride-1)` kept
/// hashes (or leaves) below it, with at most `2^(stride-1) - 1` hashes, so a proof, which needs O(log n) such
/// subtrees, costs a few hundred hashes at most; the cache costs about `1 / (2^stride - 1)` of the leaves' memory.
pub const CACHE_LEVEL_STRIDE: u32 = 4;

/// Why a proof, a tree operation or a persisted compact tree was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A proof was asked for a tree larger than the leaf source holds.
    #[error("tree size {size} is larger than the {available} leaves the source holds")]
    SizeBeyondSource {
        /// The tree size asked for.
        size: u64,
        /// The number of leaves the source holds.
        available: u64,
    },
    /// The leaf source could not produce a leaf hash it claims to hold.
    #[error("leaf {index} is not available from the leaf source")]
    LeafUnavailable {
        /// The leaf's index.
        index: u64,
    },
    /// A consistency proof was asked or checked from a larger tree to a smaller one.
    #[error("tree size went down from {old_size} to {new_size}")]
    SizeDecreased {
        /// The earlier tree size.
        old_size: u64,
        /// The later tree size.
        new_size: u64,
    },
    /// The proof has more hashes than any tree can need.
    #[error("proof of {len} hashes is longer than the bound of {max}")]
    ProofOverBound {
        /// The proof's length.
        len: usize,
        /// [`MAX_PROOF_LEN`].
        max: usize,
    },
    /// The proof has more hashes than the tree's shape needs.
    #[error("proof of {len} hashes is too long for a tree of size {size}")]
    ProofTooLong {
        /// The proof's length.
        len: usize,
        /// The (new) tree size.
        size: u64,
    },
    /// The proof has fewer hashes than the tree's shape needs.
    #[error("proof of {len} hashes is too short for a tree of size {size}")]
    ProofTooShort {
        /// The proof's length.
        len: usize,
        /// The (new) tree size.
        size: u64,
    },
    /// A consistency proof between trees that need none (equal sizes, or an empty old tree) was not empty.
    #[error("a consistency proof from size {old_size} to {new_size} must be empty, this one has {len} hashes")]
    UnexpectedProof {
        /// The earlier tree size.
        old_size: u64,
        /// The later tree size.
        new_size: u64,
        /// The proof's length.
        len: usize,
    },
    /// The inclusion proof leads to another root than the one given.
    #[error("inclusion proof leads to root {}, not to the root given", hex(.computed))]
    RootMismatch {
        /// The root the proof leads to.
        computed: Hash,
    },
    /// The consistency proof does not lead to the earlier tree's root.
    #[error("consistency proof leads to old root {}, not to the old root given", hex(.computed))]
    OldRootMismatch {
        /// The old root the proof leads to.
        computed: Hash,
    },
    /// The consistency proof does not lead to the later tree's root.
    #[error("consistency proof leads to new root {}, not to the new root given", hex(.computed))]
    NewRootMismatch {
        /// The new root the proof leads to.
        computed: Hash,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("the tree is full ({size} leaves)")]
    TreeFull {
        /// The tree size.
        size: u64,
    },
    /// A persisted compact tree is in a format version this code does not know.
    #[error("compact tree format version {version} is not supported (expected {expected})")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
        /// [`COMPACT_TREE_VERSION`].
        expected: u8,
    },
    /// A persisted compact tree has the wrong length for the size it records.
    #[error("compact tree encoding is {actual} bytes, expected {expected}")]
    EncodingLength {
        /// The length the recorded size implies (or the header length, if shorter than that).
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// A hex string is not lowercase hex of whole bytes.
    #[error("invalid hex at offset {offset}")]
    InvalidHex {
        /// Offset of the first offending character (or the length, for an odd length).
        offset: usize,
    },
}

/// Hashes one record as a leaf: `SHA-256(0x00 || record)`.
#[must_use]
pub fn leaf_hash(record: &[u8]) -> Hash {
    Sha256::new().chain_update([LEAF_PREFIX]).chain_update(record).finalize().into()
}

/// Hashes two subtree hashes into their parent's: `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([NODE_PREFIX]).chain_update(left).chain_update(right).finalize().into()
}

/// The Merkle Tree Hash of a list of leaf hashes (RFC 9162 section 2.1.1), by its recursive definition: O(n) hashes.
#[must_use]
pub fn merkle_tree_hash(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [leaf] => *leaf,
        _ => {
            // `leaves.len() >= 2` here, so the split is in 1..len; usize fits in u64 on every supported target.
            let k = split_point(leaves.len() as u64) as usize;
            let (left, right) = leaves.split_at(k);
            node_hash(&merkle_tree_hash(left), &merkle_tree_hash(right))
        }
    }
}

/// The largest power of two smaller than `n`, for `n >= 2`: where RFC 9162 splits a list of `n` leaves.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Where proofs get leaf hashes from.
///
/// Implement it over whatever holds the log's leaf hashes (memory, a file of hashes, a database). Only
/// [`LeafSource::leaf_count`] and [`LeafSource::leaf_hash`] are required; a source that keeps the hashes of perfect
/// subtrees can also return them from [`LeafSource::perfect_subtree_hash`] to make proofs cheap.
pub trait LeafSource {
    /// How many leaf hashes the source holds (indices `0..leaf_count()`).
    fn leaf_count(&self) -> u64;

    /// The hash of leaf `index`, or `None` if the source cannot produce it.
    fn leaf_hash(&self, index: u64) -> Option<Hash>;

    /// The hash of the perfect subtree of `2^level` leaves that starts at leaf `index << level`, if the source has it
    /// at hand; `None` (the default) makes the caller compute it from the level below. Only called for subtrees that
    /// lie wholly inside `0..leaf_count()`.
    fn perfect_subtree_hash(&self, level: u32, index: u64) -> Option<Hash> {
        let _ = (level, index);
        None
    }
}

impl LeafSource for [Hash] {
    fn leaf_count(&self) -> u64 {
        self.len() as u64
    }

    fn leaf_hash(&self, index: u64) -> Option<Hash> {
        usize::try_from(index).ok().and_then(|i| self.get(i)).copied()
    }
}

impl LeafSource for Vec<Hash> {
    fn leaf_count(&self) -> u64 {
        self.as_slice().leaf_count()
    }

    fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.as_slice().leaf_hash(index)
    }
}

/// Leaf hashes held in memory together with the hashes of the perfect subtrees at every [`CACHE_LEVEL_STRIDE`]-th
/// level, kept up to date as leaves are pushed, so that an inclusion or consistency proof costs a bounded number of
/// hashes (a few hundred) whatever the tree's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTree {
    /// All leaf hashes, in order.
    leaves: Vec<Hash>,
    /// `cached[j][i]` is the hash of the perfect subtree at level `(j + 1) * CACHE_LEVEL_STRIDE`, index `i`.
    cached: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of the given leaf hashes, in order.
    #[must_use]
    pub fn from_leaves(leaves: &[Hash]) -> Self {
        let mut tree = Self { leaves: Vec::with_capacity(leaves.len()), cached: Vec::new() };
        for leaf in leaves {
            tree.push(*leaf);
        }
        tree
    }

    /// Appends one leaf hash (amortised about one extra hash for the cache) and returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.leaves.len() as u64;
        self.leaves.push(leaf);
        let group = 1usize << CACHE_LEVEL_STRIDE;
        // Each time a level (leaves first, then each cached level) completes a group of `group` hashes, their parent
        // subtree at the next cached level is complete too.
        let mut level = 0usize;
        loop {
            let below: &[Hash] = if level == 0 { &self.leaves } else { &self.cached[level - 1] };
            if below.is_empty() || !below.len().is_multiple_of(group) {
                break;
            }
            let parent = perfect_root(&below[below.len() - group..]);
            if self.cached.len() == level {
                self.cached.push(Vec::new());
            }
            self.cached[level].push(parent);
            level += 1;
        }
        index
    }

    /// The leaf hashes, in order.
    #[must_use]
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    /// The root of the tree of all leaves held.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.root_at(self.leaf_count()).unwrap_or(EMPTY_ROOT)
    }

    /// The root of the tree of the first `size` leaves.
    ///
    /// # Errors
    ///
    /// [`MerkleError::SizeBeyondSource`] if `size` is more than the leaves held.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        if size > self.leaf_count() {
            return Err(MerkleError::SizeBeyondSource { size, available: self.leaf_count() });
        }
        if size == 0 {
            return Ok(EMPTY_ROOT);
        }
        range_hash(self, 0, size)
    }
}

impl LeafSource for MemoryTree {
    fn leaf_count(&self) -> u64 {
        self.leaves.leaf_count()
    }

    fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.leaves.as_slice().leaf_hash(index)
    }

    fn perfect_subtree_hash(&self, level: u32, index: u64) -> Option<Hash> {
        if level == 0 || !level.is_multiple_of(CACHE_LEVEL_STRIDE) {
            return None;
        }
        let j = usize::try_from(level / CACHE_LEVEL_STRIDE - 1).ok()?;
        let i = usize::try_from(index).ok()?;
        self.cached.get(j)?.get(i).copied()
    }
}

/// The root of a perfect subtree from its `2^h` hashes one level (or `h` levels) down: `2^h - 1` hashes.
fn perfect_root(nodes: &[Hash]) -> Hash {
    match nodes {
        [] => EMPTY_ROOT,
        [node] => *node,
        _ => {
            let (left, right) = nodes.split_at(nodes.len() / 2);
            node_hash(&perfect_root(left), &perfect_root(right))
        }
    }
}

/// The MTH of leaves `start..end` (`start < end`), split as RFC 9162 splits it, using the source's subtree hashes where
/// it has them.
fn range_hash<S: LeafSource + ?Sized>(source: &S, start: u64, end: u64) -> Result<Hash, MerkleError> {
    let n = end - start;
    if n == 1 {
        return source.leaf_hash(start).ok_or(MerkleError::LeafUnavailable { index: start });
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros();
        if let Some(hash) = source.perfect_subtree_hash(level, start >> level) {
            return Ok(hash);
        }
    }
    let k = split_point(n);
    Ok(node_hash(&range_hash(source, start, start + k)?, &range_hash(source, start + k, end)?))
}

/// Checks that a proof over the first `size` leaves of `source` can be made.
fn check_source<S: LeafSource + ?Sized>(source: &S, size: u64) -> Result<(), MerkleError> {
    let available = source.leaf_count();
    if size > available {
        return Err(MerkleError::SizeBeyondSource { size, available });
    }
    Ok(())
}

/// The inclusion proof (RFC 9162 `PATH`, section 2.1.3.1) of leaf `index` in the tree of the first `size` leaves of
/// `source`, from the leaf's sibling up to the root's child.
///
/// # Errors
///
/// [`MerkleError::SizeBeyondSource`] if the source holds fewer than `size` leaves, [`MerkleError::IndexOutOfRange`] if
/// `index >= size`, [`MerkleError::LeafUnavailable`] if the source fails to produce a leaf.
pub fn inclusion_proof<S: LeafSource + ?Sized>(source: &S, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
    check_source(source, size)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// `PATH(index - start, D[start:end])`, appended to `out` (recursion depth at most 64).
fn path<S: LeafSource + ?Sized>(
    source: &S,
    index: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = end - start;
    if n == 1 {
        return Ok(());
    }
    let k = split_point(n);
    if index - start < k {
        path(source, index, start, start + k, out)?;
        out.push(range_hash(source, start + k, end)?);
    } else {
        path(source, index, start + k, end, out)?;
        out.push(range_hash(source, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof (RFC 9162 `PROOF`, section 2.1.4.1) that the tree of the first `new_size` leaves of `source`
/// extends the tree of its first `old_size` leaves. Empty when `old_size` is 0 or equal to `new_size`.
///
/// # Errors
///
/// [`MerkleError::SizeBeyondSource`] if the source holds fewer than `new_size` leaves, [`MerkleError::SizeDecreased`]
/// if `old_size > new_size`, [`MerkleError::LeafUnavailable`] if the source fails to produce a leaf.
pub fn consistency_proof<S: LeafSource + ?Sized>(
    source: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    check_source(source, new_size)?;
    if old_size > new_size {
        return Err(MerkleError::SizeDecreased { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(source, old_size, 0, new_size, true, &mut proof)?;
    }
    Ok(proof)
}

/// `SUBPROOF(m, D[start:end], complete)`, appended to `out` (recursion depth at most 64).
fn subproof<S: LeafSource + ?Sized>(
    source: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(source, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(source, m, start, start + k, complete, out)?;
        out.push(range_hash(source, start + k, end)?);
    } else {
        subproof(source, m - k, start + k, end, false, out)?;
        out.push(range_hash(source, start, start + k)?);
    }
    Ok(())
}

/// Checks an inclusion proof with the RFC 9162 section 2.1.3.2 algorithm: that `leaf` is leaf `index` of the tree of
/// size `size` whose root is `root`.
///
/// # Errors
///
/// [`MerkleError::IndexOutOfRange`], [`MerkleError::ProofOverBound`], [`MerkleError::ProofTooLong`],
/// [`MerkleError::ProofTooShort`] or [`MerkleError::RootMismatch`].
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_proof(leaf, index, size, proof)?;
    if computed != *root {
        return Err(MerkleError::RootMismatch { computed });
    }
    Ok(())
}

/// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, without the final comparison).
///
/// # Errors
///
/// [`MerkleError::IndexOutOfRange`], [`MerkleError::ProofOverBound`], [`MerkleError::ProofTooLong`] or
/// [`MerkleError::ProofTooShort`].
pub fn root_from_inclusion_proof(leaf: &Hash, index: u64, size: u64, proof: &[Hash]) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(MerkleError::ProofOverBound { len: proof.len(), max: MAX_PROOF_LEN });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::ProofTooLong { len: proof.len(), size });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::ProofTooShort { len: proof.len(), size });
    }
    Ok(r)
}

/// Checks a consistency proof with the RFC 9162 section 2.1.4.2 algorithm: that the tree of size `new_size` with root
/// `new_root` extends the tree of size `old_size` with root `old_root`.
///
/// Equal sizes need an empty proof and equal roots; an old size of 0 needs an empty proof and `old_root ==`
/// [`EMPTY_ROOT`] (and a new size of 0 `new_root == EMPTY_ROOT`).
///
/// # Errors
///
/// [`MerkleError::SizeDecreased`], [`MerkleError::UnexpectedProof`], [`MerkleError::ProofOverBound`],
/// [`MerkleError::ProofTooLong`], [`MerkleError::ProofTooShort`], [`MerkleError::OldRootMismatch`] or
/// [`MerkleError::NewRootMismatch`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizeDecreased { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::UnexpectedProof { old_size, new_size, len: proof.len() });
        }
        if old_size == 0 && *old_root != EMPTY_ROOT {
            return Err(MerkleError::OldRootMismatch { computed: EMPTY_ROOT });
        }
        if new_size == 0 && *new_root != EMPTY_ROOT {
            return Err(MerkleError::NewRootMismatch { computed: EMPTY_ROOT });
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::NewRootMismatch { computed: *old_root });
        }
        return Ok(());
    }
    // 0 < old_size < new_size from here on.
    if proof.len() > MAX_PROOF_LEN {
        return Err(MerkleError::ProofOverBound { len: proof.len(), max: MAX_PROOF_LEN });
    }
    // Step 2: an old tree whose size is a power of two is a subtree of the new one, and the proof leaves its root out.
    let (first, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(MerkleError::ProofTooShort { len: 0, size: new_size }),
        }
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if s == 0 {
            return Err(MerkleError::ProofTooLong { len: proof.len(), size: new_size });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::ProofTooShort { len: proof.len(), size: new_size });
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch { computed: fr });
    }
    if sr != *new_root {
        return Err(MerkleError::NewRootMismatch { computed: sr });
    }
    Ok(())
}

/// An append-only Merkle tree that keeps only its frontier: the roots of the perfect subtrees along its right edge,
/// one per set bit of its size, largest (leftmost) first.
///
/// Appending costs at most 64 hashes (amortised one), the root at most 63; the frontier is at most 64 hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    /// Number of leaves appended.
    size: u64,
    /// Invariant: `frontier.len() == size.count_ones()`; `frontier[i]` covers the `i`-th set bit from the top.
    frontier: Vec<Hash>,
}

impl CompactTree {
    /// The empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The compact tree of the given leaf hashes, in order.
    ///
    /// # Errors
    ///
    /// Never in practice: [`MerkleError::TreeFull`] only past `u64::MAX` leaves.
    pub fn from_leaves(leaves: &[Hash]) -> Result<Self, MerkleError> {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.append(*leaf)?;
        }
        Ok(tree)
    }

    /// The number of leaves appended.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier's hashes, largest subtree first.
    #[must_use]
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }

    /// Appends one leaf hash and returns its index.
    ///
    /// # Errors
    ///
    /// [`MerkleError::TreeFull`] if the tree already holds `u64::MAX` leaves.
    pub fn append(&mut self, leaf: Hash) -> Result<u64, MerkleError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(MerkleError::TreeFull { size: index })?;
        // Each trailing one bit of the old size is a perfect subtree that the new leaf completes into a larger one.
        let mut hash = leaf;
        let mut bits = index;
        while bits & 1 == 1 {
            match self.frontier.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                // Unreachable while the invariant holds, which every constructor keeps.
                None => break,
            }
            bits >>= 1;
        }
        self.frontier.push(hash);
        self.size = new_size;
        Ok(index)
    }

    /// The tree's root (RFC 9162 MTH of all leaves appended).
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut subtrees = self.frontier.iter().rev();
        match subtrees.next() {
            None => EMPTY_ROOT,
            Some(last) => subtrees.fold(*last, |right, left| node_hash(left, &right)),
        }
    }

    /// The persisted form: [`COMPACT_TREE_VERSION`], the size as a big-endian `u64`, then the frontier's hashes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COMPACT_TREE_HEADER_LEN + self.frontier.len() * HASH_LEN);
        out.push(COMPACT_TREE_VERSION);
        out.extend_from_slice(&self.size.to_be_bytes());
        for hash in &self.frontier {
            out.extend_from_slice(hash);
        }
        out
    }

    /// Reads the persisted form written by [`CompactTree::to_bytes`].
    ///
    /// # Errors
    ///
    /// [`MerkleError::EncodingLength`] if the bytes are not exactly as long as the size they record needs,
    /// [`MerkleError::UnsupportedVersion`] if the version byte is not [`COMPACT_TREE_VERSION`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let Some((header, hashes)) = bytes.split_at_checked(COMPACT_TREE_HEADER_LEN) else {
            return Err(MerkleError::EncodingLength { expected: COMPACT_TREE_HEADER_LEN, actual: bytes.len() });
        };
        let (version, size_bytes) = (header[0], &header[1..]);
        if version != COMPACT_TREE_VERSION {
            return Err(MerkleError::UnsupportedVersion { version, expected: COMPACT_TREE_VERSION });
        }
        let mut size_be = [0u8; 8];
        size_be.copy_from_slice(size_bytes);
        let size = u64::from_be_bytes(size_be);
        let expected = COMPACT_TREE_HEADER_LEN + size.count_ones() as usize * HASH_LEN;
        if bytes.len() != expected {
            return Err(MerkleError::EncodingLength { expected, actual: bytes.len() });
        }
        let frontier = hashes
            .chunks_exact(HASH_LEN)
            .map(|chunk| {
                let mut hash = [0u8; HASH_LEN];
                hash.copy_from_slice(chunk);
                hash
            })
            .collect();
        Ok(Self { size, frontier })
    }

    /// [`CompactTree::to_bytes`] as lowercase hex.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(&self.to_bytes())
    }

    /// Reads [`CompactTree::to_hex`]'s output.
    ///
    /// # Errors
    ///
    /// [`MerkleError::InvalidHex`] on anything but lowercase hex of whole bytes, then as [`CompactTree::from_bytes`].
    pub fn from_hex(text: &str) -> Result<Self, MerkleError> {
        Self::from_bytes(&from_hex(text)?)
    }
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes lowercase hex of whole bytes.
///
/// # Errors
///
/// [`MerkleError::InvalidHex`] at the first character that is not `0-9a-f`, or at the length if it is odd.
pub fn from_hex(text: &str) -> Result<Vec<u8>, MerkleError> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(MerkleError::InvalidHex { offset: bytes.len() });
    }
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for (pair_index, pair) in bytes.chunks_exact(2).enumerate() {
        let offset = pair_index * 2;
        let high = digit(pair[0]).ok_or(MerkleError::InvalidHex { offset })?;
        let low = digit(pair[1]).ok_or(MerkleError::InvalidHex { offset: offset + 1 })?;
        out.push(high << 4 | low);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
