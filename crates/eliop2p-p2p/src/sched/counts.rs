//! Per-piece counts a download keeps current instead of recounting at each poll:
//! copies of each piece in flight, and how many swarm peers have each piece.

use super::bits::Bits;

/// Copies of each piece in flight (one per peer asked for it), and their sum,
/// which every poll (and the node-wide budget) reads.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Copies {
    pub(super) per_piece: Vec<u8>,
    pub(super) total: usize,
}

impl Copies {
    pub(super) fn of(&self, piece: u32) -> u8 {
        self.per_piece[piece as usize]
    }

    pub(super) fn asked(&mut self, piece: u32) {
        self.per_piece[piece as usize] += 1;
        self.total += 1;
    }

    /// A copy answered, refused or withdrawn.
    pub(super) fn ended(&mut self, piece: u32) {
        let c = &mut self.per_piece[piece as usize];
        if *c > 0 {
            *c -= 1;
            self.total -= 1;
        }
    }
}

/// Adds (or takes away) one peer's pieces to per-piece counts.
pub(super) fn count_pieces(counts: &mut [u32], have: &Bits, add: bool) {
    for i in have.iter() {
        if add {
            counts[i] += 1;
        } else {
            counts[i] -= 1;
        }
    }
}


/// Moves per-piece counts from one peer's old pieces to its new ones, touching
/// only the pieces that changed (a watched peer's fresh bitmap differs from its
/// last by a piece or two).
pub(super) fn count_changes(counts: &mut [u32], old: &Bits, new: &Bits) {
    for (i, added) in old.changes(new) {
        if added {
            counts[i] += 1;
        } else {
            counts[i] -= 1;
        }
    }
}
