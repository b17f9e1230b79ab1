//! How long a warm `Kerndat::get` (cache hit) takes: the probing cost every
//! `revenant check`, dump and restore pays once the cache exists.
//! Run: `cargo bench -p revenant --bench kerndat`.

use std::time::Instant;

use revenant::kerndat::Kerndat;

fn main() {
    let path = std::env::temp_dir().join(format!("revenant-kerndat-bench-{}", std::process::id()));
    let cold = Instant::now();
    Kerndat::get_cached_at(&path).expect("probing");
    let cold = cold.elapsed();
    let mut runs: Vec<f64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(Kerndat::get_cached_at(&path).expect("cached"));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    let _ = std::fs::remove_file(&path);
    println!("kerndat cold probe: {:.2} ms", cold.as_secs_f64() * 1e3);
    println!(
        "kerndat warm (cache hit): median {:.1} us, p99 {:.1} us over {} runs",
        runs[runs.len() / 2],
        runs[runs.len() * 99 / 100],
        runs.len()
    );
}
