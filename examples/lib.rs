//! Examples of pipelines on the Alluvium engine: see `word_count.rs`.
