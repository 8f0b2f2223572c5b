//! Unify.
