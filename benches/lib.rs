//! Shared helpers of the criterion benchmarks (see `benches/`).

/// mimalloc's `mi_option_purge_delay` (enum index 15 in the bundled mimalloc v3 header).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets a bench process up as `alluvium` sets itself up, so the figures are the binary's:
/// freed memory stays mapped (mimalloc purges it 10 ms after a free by default, and on a VM
/// faulting it back in costs seconds per GiB; see the CLI's `tune_allocator`), and with
/// `ALLUVIUM_OPERATOR_TIMES=1` the workers' per-operator times are logged to stderr.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
pub fn setup() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the global allocator; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
    if alluvium_engine::operator_time::enabled() {
        // A second call (criterion runs a bench function more than once) keeps the first.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
}
