//! Ferry's upload server.
pub mod storage;
