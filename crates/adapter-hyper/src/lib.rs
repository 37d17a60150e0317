//! hyper adapter.
