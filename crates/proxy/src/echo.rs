//! The built-in echo upstream (being written).
