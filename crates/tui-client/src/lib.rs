//! Ferry's client: the terminal file picker (`ferry`) and the headless
//! sender (`ferry send`).
//!
//! - [`transfer`]: planning, sending and measuring a transfer; no UI.

pub mod transfer;
