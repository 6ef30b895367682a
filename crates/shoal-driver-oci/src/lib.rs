//! The oci driver (being written).
