//! The process driver (being written).
