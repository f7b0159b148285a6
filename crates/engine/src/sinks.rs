//! Ready-made sinks: [`file::FileSink`] (a durable table in one JSON document) and
//! [`null::NullSink`] (counts, keeps nothing).

pub mod file;
pub mod null;
