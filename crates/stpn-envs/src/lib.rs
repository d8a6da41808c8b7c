//! Environments and data of the STPN experiments.
//!
//! - [`art`]: the associative retrieval task (spec §3.1).

pub mod art;
