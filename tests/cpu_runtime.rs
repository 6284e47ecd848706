//! `tune_cpu_runtime` fixes the thread count candle would otherwise work out from
//! `/proc/cpuinfo` on every CPU matmul, and keeps a count the user chose. One test in its own
//! binary: it changes the process environment, which no other test may read meanwhile.

use sparsewatt::model::tune_cpu_runtime;

#[test]
fn tune_cpu_runtime_pins_the_thread_count_and_keeps_the_users() {
    const VAR: &str = "RAYON_NUM_THREADS";
    std::env::remove_var(VAR);
    tune_cpu_runtime();
    let pinned: usize = std::env::var(VAR).expect("set").parse().expect("a number");
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(pinned, logical);
    // candle's count and the pool the fused kernels split over now agree.
    assert_eq!(candle_core::utils::get_num_threads(), pinned);
    assert_eq!(rayon::current_num_threads(), pinned);

    std::env::set_var(VAR, "3");
    tune_cpu_runtime();
    assert_eq!(std::env::var(VAR).as_deref(), Ok("3"));
    assert_eq!(candle_core::utils::get_num_threads(), 3);
}
