//! Ferry's client: the terminal file picker (`ferry`) and the headless
//! sender (`ferry send`).
//!
//! - [`transfer`]: planning, sending and measuring a transfer; no UI.
//! - [`tui`]: the terminal picker's event loop, around [`app`] (state and
//!   keys), [`browse`] (folders and marks), [`ui`] (drawing) and [`event`]
//!   (the one channel everything reports through).
//! - [`headless`]: `ferry send`, the transfer with a progress bar.
//! - [`words`] and [`order`]: how counts read and names are ordered in
//!   what both of them show.

pub mod headless;
pub mod order;
pub mod transfer;

pub mod app;
pub mod browse;
pub mod event;
pub mod tui;
pub mod ui;
pub mod words;
