//! Connections by token: a slab of slots, each with a generation, so a
//! token the host kept for a closed connection never reaches the newer
//! connection that reuses its slot.

/// Names one connection to the host: the slot generation in the high 32
/// bits, the slot index in the low 32. Generations stay below 2^20 and
/// indices below 2^32, so every token is below 2^52: exact as a JavaScript
/// number, and never equal to the engine's own epoll keys (see engine.rs).
pub type Token = u64;

/// Generations wrap within 20 bits (see `Token`).
const GENERATION_MASK: u32 = 0x000f_ffff;

fn token_of(index: u32, generation: u32) -> Token {
    (u64::from(generation) << 32) | u64::from(index)
}

/// The slot index a token names.
pub fn index_of(token: Token) -> usize {
    (token & 0xffff_ffff) as usize
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value`, returning its token.
    pub fn insert(&mut self, value: T) -> Token {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        token_of(index, slot.generation)
    }

    /// The slot index `token` names, if it is still the slot's generation.
    fn live_index(&self, token: Token) -> Option<usize> {
        let index = index_of(token);
        let slot = self.slots.get(index)?;
        (u64::from(slot.generation) == token >> 32).then_some(index)
    }

    /// The value `token` names, if it is still that one.
    pub fn get(&self, token: Token) -> Option<&T> {
        self.slots[self.live_index(token)?].value.as_ref()
    }

    /// The value `token` names, if it is still that one.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let index = self.live_index(token)?;
        self.slots[index].value.as_mut()
    }

    /// Takes the value out; its token is stale from now on.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        let index = index_of(token);
        let slot = self.slots.get_mut(index)?;
        if u64::from(slot.generation) != token >> 32 {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.free.push(index as u32);
        Some(value)
    }

    /// Values stored.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots, occupied or not (where a scan over `range` may stop).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The stored values with their tokens.
    pub fn iter(&self) -> impl Iterator<Item = (Token, &T)> {
        self.range(0..self.slots.len())
    }

    /// The stored values of slots `range`, with their tokens.
    pub fn range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = (Token, &T)> {
        let end = range.end.min(self.slots.len());
        let start = range.start.min(end);
        self.slots[start..end]
            .iter()
            .enumerate()
            .filter_map(move |(i, slot)| {
                let value = slot.value.as_ref()?;
                Some((token_of((start + i) as u32, slot.generation), value))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_token_misses_the_slots_new_value() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b");
        assert_eq!(index_of(a), index_of(b));
        assert_ne!(a, b);
        assert_eq!(slab.get_mut(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get_mut(b).copied(), Some("b"));
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn range_yields_occupied_slots_with_their_tokens() {
        let mut slab = Slab::default();
        let tokens: Vec<Token> = (0..4).map(|i| slab.insert(i)).collect();
        slab.remove(tokens[1]);
        let seen: Vec<(Token, i32)> = slab.range(0..3).map(|(t, v)| (t, *v)).collect();
        assert_eq!(seen, [(tokens[0], 0), (tokens[2], 2)]);
        assert_eq!(slab.range(3..99).count(), 1);
        assert_eq!(slab.range(9..99).count(), 0);
    }

    #[test]
    fn generations_wrap_below_two_to_the_52() {
        let mut slab = Slab::default();
        let mut token = slab.insert(());
        for _ in 0..=GENERATION_MASK {
            slab.remove(token);
            token = slab.insert(());
            assert!(token < 1 << 52);
        }
        assert_eq!(token >> 32, 0);
    }
}
