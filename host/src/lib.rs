//! revenant: checkpoint and restore of Linux process trees in CRIU's image
//! format. This library is the host side: the embedded restorer blob and its
//! loader, and (as they land) image handling, dump and restore.

pub mod blob;
pub mod cgroup;
pub mod demo;
pub mod dump;
pub mod fault;
pub mod files;
pub mod holder;
pub mod imgchain;
pub mod imgdir;
pub mod kerndat;
pub mod lazy;
pub mod maps;
pub mod procfs;
pub mod reap;
pub mod regs;
pub mod restore;
pub mod seccomp;
pub mod shmem;
pub mod sysv;
