//! Writing the tree as CRIU images.
//!
//! Not yet possible: the message definitions and framing belong to the
//! image layer (`revenant-images`, issue 3), which has no writer yet. The
//! [`Tree`](super::model::Tree) mirrors the messages field by field so the
//! conversion is mechanical once it does.

use std::path::Path;

use anyhow::{Result, bail};

use super::model::Tree;

/// Writes every image but the pages under temporary names; returns the
/// final names.
pub fn write(_tree: &Tree, _dir: &Path) -> Result<Vec<String>> {
    bail!(
        "writing inventory, pstree, core, mm, pagemap, files and the other images needs the image layer's \
         message writer (revenant-images, issue 3), which does not exist yet; nothing was dumped"
    )
}
