//! The restorer blob as the host sees it: the flat image built into this
//! binary, the argument block the host writes for it, and the loader that
//! maps, relocates and enters it.

mod args;
mod embedded;
mod header;
mod info;
mod loader;
mod selftest;
mod sigframe;

pub use args::{ArgBlock, BlockBuilder};
pub use embedded::EMBEDDED;
pub use header::{header, plain as plain_doc};
pub use info::{EXAMPLE_LOADER, export, info_json, info_text};
pub use loader::{Loaded, load, map_stack};
pub use selftest::{LOAD_FAILED_BASE, SelfTestOutcome, run_in_child, run_selftest, selftest_block};
