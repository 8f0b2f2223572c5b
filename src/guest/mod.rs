//! Guests: namespaces, root set-up and lifecycle. Not built yet.
