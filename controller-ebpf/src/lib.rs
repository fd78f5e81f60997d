//! Empty host-side library: it exists so `controller` can build-depend on this crate and be
//! rebuilt when the programs change. The programs themselves are in `main.rs`.
#![no_std]
