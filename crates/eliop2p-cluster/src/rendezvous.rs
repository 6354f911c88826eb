//! Rendezvous (highest random weight) hashing: every node ranks the live members for
//! a chunk the same way, without coordination, and a member joining or leaving only
//! moves the chunks it wins or held.

use eliop2p_core::ChunkId;

/// A stable 64-bit hash of a node id (FNV-1a): the same on every build and platform,
/// since nodes of one cluster must agree.
pub fn node_hash(node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `node` for `chunk`; the highest weight owns the chunk.
pub fn weight(chunk: &ChunkId, node_hash: u64) -> u64 {
    let b = chunk.as_bytes();
    let c = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    mix(c ^ mix(node_hash))
}

/// Indexes of `nodes` (by their hashes) from the chunk's owner down.
pub fn rank(chunk: &ChunkId, node_hashes: &[u64]) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = node_hashes
        .iter()
        .enumerate()
        .map(|(i, h)| (weight(chunk, *h), i))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u64) -> ChunkId {
        let mut b = [0u8; 32];
        // Real chunk ids are SHA-256 outputs; spread the test ids the same way.
        b[..8].copy_from_slice(&mix(i).to_be_bytes());
        ChunkId::from_bytes(b)
    }

    #[test]
    fn ownership_is_balanced_and_stable() {
        let nodes: Vec<u64> = (0..10).map(|i| node_hash(&format!("node-{i}"))).collect();
        let mut owned = [0usize; 10];
        let owners: Vec<usize> = (0..10_000).map(|c| rank(&chunk(c), &nodes)[0]).collect();
        for o in &owners {
            owned[*o] += 1;
        }
        for n in owned {
            assert!((700..1300).contains(&n), "unbalanced: {owned:?}");
        }
        // Removing node 3 moves only node 3's chunks, each to its second choice.
        let without: Vec<u64> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, h)| *h)
            .collect();
        for c in 0..10_000u64 {
            let before = rank(&chunk(c), &nodes);
            let after = rank(&chunk(c), &without)[0];
            let after_hash = without[after];
            if before[0] != 3 {
                assert_eq!(nodes[before[0]], after_hash);
            } else {
                assert_eq!(nodes[before[1]], after_hash);
            }
        }
    }

    #[test]
    fn node_hash_is_fixed() {
        // Nodes of different builds must agree: pin the function.
        assert_eq!(node_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
