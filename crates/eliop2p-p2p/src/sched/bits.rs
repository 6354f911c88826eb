//! A fixed-size set of piece indexes, a bit per piece: what a peer has, and
//! which pieces a poll may still ask for, so that a poll skips a peer with none
//! of them in a few word operations instead of a scan of the pieces.

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Bits {
    words: Words,
    len: usize,
}

/// The words of a set: one word (a chunk of up to 64 pieces, 16 MiB of 256 KiB
/// pieces) is held inline, so the bitmaps a download makes and replaces at every
/// have-announcement cost no allocation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Words {
    One(u64),
    Many(Vec<u64>),
}

impl Default for Words {
    fn default() -> Self {
        Words::One(0)
    }
}

impl std::ops::Deref for Words {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            Words::One(w) => std::slice::from_ref(w),
            Words::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Words {
    fn deref_mut(&mut self) -> &mut [u64] {
        match self {
            Words::One(w) => std::slice::from_mut(w),
            Words::Many(v) => v,
        }
    }
}

impl Bits {
    pub(super) fn new(len: usize) -> Self {
        let n = len.div_ceil(64);
        let words = if n <= 1 { Words::One(0) } else { Words::Many(vec![0; n]) };
        Self { words, len }
    }

    pub(super) fn from_bools(len: usize, have: &[bool]) -> Self {
        let mut b = Self::new(len);
        for (i, _) in have.iter().take(len).enumerate().filter(|(_, h)| **h) {
            b.set(i);
        }
        b
    }

    /// From words, bit `i % 64` of word `i / 64` for index `i`; bits past `len`
    /// are dropped.
    pub(super) fn from_words(len: usize, words: &[u64]) -> Self {
        let mut b = Self::new(len);
        for (w, src) in b.words.iter_mut().zip(words) {
            *w = *src;
        }
        if !len.is_multiple_of(64)
            && let Some(last) = b.words.last_mut()
        {
            *last &= (1u64 << (len % 64)) - 1;
        }
        b
    }

    pub(super) fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 == 1
    }

    pub(super) fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(super) fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    pub(super) fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    pub(super) fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether some index is in both sets.
    pub(super) fn intersects(&self, other: &Bits) -> bool {
        self.words.iter().zip(other.words.iter()).any(|(a, b)| a & b != 0)
    }

    /// The indexes in one set and not the other (both of one length), with
    /// whether `other` has them.
    pub(super) fn changes<'a>(&'a self, other: &'a Bits) -> impl Iterator<Item = (usize, bool)> + 'a {
        self.words.iter().zip(other.words.iter()).enumerate().flat_map(|(w, (&a, &b))| {
            let mut diff = a ^ b;
            std::iter::from_fn(move || {
                (diff != 0).then(|| {
                    let bit = diff.trailing_zeros() as usize;
                    diff &= diff - 1;
                    (w * 64 + bit, b >> bit & 1 == 1)
                })
            })
        })
    }

    /// The indexes in the set, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let b = word.trailing_zeros() as usize;
                    word &= word - 1;
                    w * 64 + b
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_count_across_words() {
        let mut b = Bits::new(130);
        for i in [0, 63, 64, 129] {
            b.set(i);
        }
        assert!(b.get(63) && b.get(64) && b.get(129) && !b.get(1) && !b.get(500));
        assert_eq!(b.count(), 4);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        b.clear(64);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 129]);
        let mut other = Bits::new(130);
        other.set(64);
        assert!(!b.intersects(&other));
        other.set(129);
        assert!(b.intersects(&other));
        b.clear_all();
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn from_bools_keeps_the_length() {
        let b = Bits::from_bools(3, &[true, false, true, true, true]);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 2]);
        assert!(!b.get(3));
    }

    #[test]
    fn from_words_and_changes() {
        let b = Bits::from_words(66, &[0b101, u64::MAX, 7]);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 2, 64, 65]);
        let mut c = b.clone();
        c.clear(2);
        c.set(3);
        c.clear(65);
        assert_eq!(b.changes(&c).collect::<Vec<_>>(), vec![(2, false), (3, true), (65, false)]);
        assert_eq!(b.changes(&b).count(), 0);
    }
}
