//! The relay server machine.
