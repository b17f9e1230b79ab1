use linux_raw_sys::errno;

/// A kernel error number, as returned negated by a failing system call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Errno(u16);

impl Errno {
    pub const EPERM: Self = Self(errno::EPERM as u16);
    pub const ENOENT: Self = Self(errno::ENOENT as u16);
    pub const ESRCH: Self = Self(errno::ESRCH as u16);
    pub const EINTR: Self = Self(errno::EINTR as u16);
    pub const E2BIG: Self = Self(errno::E2BIG as u16);
    pub const EBADF: Self = Self(errno::EBADF as u16);
    pub const EAGAIN: Self = Self(errno::EAGAIN as u16);
    pub const ENOMEM: Self = Self(errno::ENOMEM as u16);
    pub const EFAULT: Self = Self(errno::EFAULT as u16);
    pub const EBUSY: Self = Self(errno::EBUSY as u16);
    pub const EEXIST: Self = Self(errno::EEXIST as u16);
    pub const EINVAL: Self = Self(errno::EINVAL as u16);
    pub const ENOSYS: Self = Self(errno::ENOSYS as u16);

    /// Wraps a positive kernel error number.
    pub const fn from_raw(raw: u16) -> Self {
        Self(raw)
    }

    /// The positive error number.
    pub const fn raw(self) -> u16 {
        self.0
    }
}

impl core::fmt::Debug for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}
