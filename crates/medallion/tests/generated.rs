//! Property: on generated dirty data, the tables of a streaming run (random epoch sizes,
//! partition counts and worker counts) equal those of a batch run (one epoch, one worker).

use alluvium_medallion::export::tables;
use alluvium_medallion::generate::{generate, GeneratorConfig};
use alluvium_medallion::memory::{partition, run};
use alluvium_medallion::{PipelineConfig, Topics};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn streaming_equals_batch(seed in 0u64..100_000, workers in 1usize..3, epoch in 3usize..400, partitions in 1usize..6) {
        let cfg = GeneratorConfig { seed, orders: 120, products: 25, customers: 40, ..GeneratorConfig::default() };
        let messages = generate(&cfg, &Topics::with_prefix(""));
        let config = PipelineConfig::default();
        let batch_dir = tempfile::tempdir().unwrap();
        let batch = run(&partition(&messages, 4), batch_dir.path(), 1, usize::MAX / 2, &config).unwrap();
        let stream_dir = tempfile::tempdir().unwrap();
        let stream = run(&partition(&messages, partitions), stream_dir.path(), workers, epoch, &config).unwrap();
        let batch_tables = tables(&batch);
        prop_assert!(batch_tables.iter().any(|(f, _, rows)| *f == "fact_order_items.csv" && rows.len() > 50));
        prop_assert_eq!(tables(&stream), batch_tables);
    }
}
