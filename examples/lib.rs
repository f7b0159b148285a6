//! Examples of pipelines on the Alluvium engine: see `word_count.rs` (counting, exactly-once
//! commits) and `payments_quality.rs` (data-quality rules with `alluvium-dq`).
