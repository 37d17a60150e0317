//! Storage backends for matrix-relay.
