//! natty-tower
