//! Helpers shared by several benches (each bench includes this module).

#![allow(dead_code)]

pub mod child;
