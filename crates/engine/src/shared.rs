//! [`Shared`]: a large record shared between collections, compared by identity first.
//!
//! Differential dataflow keeps its collections sorted: batchers sort every update, and
//! arrangements merge their batches value by value. A record large enough to be shared
//! through an [`Arc`] (an order with its lines, say) is therefore compared a great deal —
//! and very often with itself: a retraction meets the insertion it undoes, and a merge meets
//! one value in both of its inputs, each time through clones of one `Arc`. `Arc<T>`'s `Ord`
//! compares the contents even then, field by field to the end (only its `PartialEq` looks at
//! the pointer first). `Shared<T>` answers `Equal` for two handles of one allocation without
//! reading it, and otherwise compares exactly as `T` does, so every collection keeps the same
//! order and the same contents.
//!
//! ```
//! use alluvium_engine::shared::Shared;
//!
//! let order = Shared::new(vec!["a line"; 1000]);
//! let same = order.clone();
//! assert_eq!(order.cmp(&same), std::cmp::Ordering::Equal); // no element is read
//! assert!(Shared::new(vec!["a"]) < Shared::new(vec!["b"])); // contents decide otherwise
//! ```

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A shared, immutable `T` whose comparisons short-circuit when both sides are one
/// allocation. Equality, order and hash are those of `T`; it serialises as `T`.
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Shares `value`.
    pub fn new(value: T) -> Self {
        Shared(Arc::new(value))
    }

    /// Whether `a` and `b` are handles of one allocation (then they are equal).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::new(value)
    }
}

impl<T> From<Arc<T>> for Shared<T> {
    fn from(value: Arc<T>) -> Self {
        Shared(value)
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Shared::ptr_eq(self, other) || *self.0 == *other.0
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: Ord> PartialOrd for Shared<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Shared<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        if Shared::ptr_eq(self, other) {
            // `Ord` is total and reflexive: a value equals itself.
            Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl<T: Hash> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::cmp::Ordering;

    use super::Shared;

    /// Counts how often it is compared.
    #[derive(Debug, PartialEq, Eq)]
    struct Counted<'a>(u32, &'a Cell<u32>);

    impl PartialOrd for Counted<'_> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }

    impl Ord for Counted<'_> {
        fn cmp(&self, other: &Self) -> Ordering {
            self.1.set(self.1.get() + 1);
            self.0.cmp(&other.0)
        }
    }

    #[test]
    fn one_allocation_is_equal_without_a_comparison() {
        let compared = Cell::new(0);
        let a = Shared::new(Counted(1, &compared));
        assert_eq!(a.cmp(&a.clone()), Ordering::Equal);
        assert_eq!(compared.get(), 0);
        // Two allocations of equal contents compare their contents.
        assert_eq!(a.cmp(&Shared::new(Counted(1, &compared))), Ordering::Equal);
        assert_eq!(compared.get(), 1);
    }

    #[test]
    fn order_equality_and_hash_are_the_contents() {
        let mut v: Vec<Shared<String>> = ["b", "a", "c", "a"]
            .into_iter()
            .map(|s| Shared::new(s.to_string()))
            .collect();
        v.push(v[0].clone());
        v.sort();
        let sorted: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        assert_eq!(sorted, ["a", "a", "b", "b", "c"]);
        assert_eq!(Shared::new(1), Shared::new(1));
        assert_ne!(Shared::new(1), Shared::new(2));
        use std::hash::BuildHasher;
        let s = std::collections::hash_map::RandomState::new();
        assert_eq!(s.hash_one(Shared::new("x")), s.hash_one("x"));
    }

    #[test]
    fn serialises_as_its_contents() {
        let json = serde_json::to_string(&Shared::new(vec![1, 2])).unwrap_or_default();
        assert_eq!(json, "[1,2]");
        let back: Shared<Vec<i32>> = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(*back, vec![1, 2]);
    }
}
