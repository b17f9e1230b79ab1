//! Shared anonymous memory (`MAP_SHARED|MAP_ANONYMOUS`) and memfd objects,
//! each once however many areas and fds hold it: the dump half ([`dump`])
//! reads each object and writes its pages and pagemap; the
//! restore half (`restore`) plans the objects from the images and makes
//! them before the tree maps them.

pub mod dump;
pub(crate) mod restore;
