//! Ready-made sinks.

pub mod file;
