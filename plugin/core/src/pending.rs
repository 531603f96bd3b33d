//! Results of `skylark_get_bundle` that did not fit the guest's buffer, kept per instance
//! under a handle until the guest takes them with `skylark_take_result`.

use std::collections::VecDeque;

/// A result that can wait: its length in bytes as the guest will receive it.
pub trait Kept {
    fn kept_len(&self) -> usize;
}

impl Kept for Vec<u8> {
    fn kept_len(&self) -> usize {
        self.len()
    }
}

impl Kept for crate::reply::Reply {
    fn kept_len(&self) -> usize {
        self.len()
    }
}

/// A bounded set of pending results; the oldest is evicted when full.
#[derive(Debug)]
pub struct Pending<T = Vec<u8>> {
    max: usize,
    next: u32,
    items: VecDeque<(u32, T, bool)>,
}

impl<T: Kept> Pending<T> {
    pub fn new(max: usize) -> Self {
        Pending {
            max: max.max(1),
            next: 1,
            items: VecDeque::new(),
        }
    }

    /// Keeps `bytes` and returns its handle (never 0).
    pub fn insert(&mut self, bytes: T) -> u32 {
        self.insert_marked(bytes, false)
    }

    /// Keeps `bytes` with a mark (a `wait_for` result that timed out, which
    /// `skylark_take_result` reports as `TimedOut`) and returns its handle (never 0).
    pub fn insert_marked(&mut self, bytes: T, timed_out: bool) -> u32 {
        while self.items.len() >= self.max {
            self.items.pop_front();
        }
        let handle = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.items.push_back((handle, bytes, timed_out));
        handle
    }

    /// The length of the result under `handle`, if any.
    pub fn len_of(&self, handle: u32) -> Option<usize> {
        self.items
            .iter()
            .find(|(h, _, _)| *h == handle)
            .map(|(_, b, _)| b.kept_len())
    }

    /// Removes and returns the result under `handle`.
    pub fn take(&mut self, handle: u32) -> Option<T> {
        self.take_marked(handle).map(|(b, _)| b)
    }

    /// Removes and returns the result under `handle` with its mark.
    pub fn take_marked(&mut self, handle: u32) -> Option<(T, bool)> {
        let i = self.items.iter().position(|(h, _, _)| *h == handle)?;
        self.items.remove(i).map(|(_, b, m)| (b, m))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_take_and_evict_oldest() {
        let mut p = Pending::<Vec<u8>>::new(2);
        let a = p.insert(vec![1]);
        let b = p.insert(vec![2, 2]);
        assert_ne!(a, 0);
        assert_ne!(a, b);
        assert_eq!(p.len_of(b), Some(2));
        let c = p.insert(vec![3]);
        assert_eq!(p.len(), 2);
        assert_eq!(p.take(a), None, "oldest evicted");
        assert_eq!(p.take(b), Some(vec![2, 2]));
        assert_eq!(p.take(b), None, "taken once");
        assert_eq!(p.take(c), Some(vec![3]));
        assert!(p.is_empty());
        let d = p.insert_marked(vec![4], true);
        assert_eq!(p.take_marked(d), Some((vec![4], true)));
    }

    #[test]
    fn handles_skip_zero_on_wrap() {
        let mut p = Pending::<Vec<u8>>::new(1);
        p.next = u32::MAX;
        assert_eq!(p.insert(vec![]), u32::MAX);
        assert_eq!(p.insert(vec![]), 1);
    }
}
