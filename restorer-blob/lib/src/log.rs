//! The blob's log: whole lines built in a fixed buffer and written with one
//! `write` each, so lines from several threads never interleave mid-line.
//!
//! Lines look like `blob: error: <text>`. A line longer than the buffer is
//! cut and ends in `...`.

use revenant_arch::Errno;
use revenant_blob_abi::LogLevel;

const LINE_MAX: usize = 256;

/// Where and how much to log, from the argument block.
#[derive(Clone, Copy)]
pub struct Log {
    fd: i32,
    level: u32,
}

impl Log {
    pub fn new(fd: i32, level: u32) -> Log {
        Log { fd, level }
    }

    /// The fd and level, to rebuild this log elsewhere (another thread).
    pub fn params(&self) -> (i32, u32) {
        (self.fd, self.level)
    }

    pub fn line(&self, level: LogLevel) -> Line {
        let enabled = self.fd >= 0 && level as u32 <= self.level;
        let tag = match level {
            LogLevel::Error => "blob: error: ",
            LogLevel::Warn => "blob: warn: ",
            LogLevel::Info => "blob: ",
            LogLevel::Debug => "blob: debug: ",
        };
        Line { buf: [0; LINE_MAX], len: 0, fd: if enabled { self.fd } else { -1 } }.s(tag)
    }

    pub fn error(&self) -> Line {
        self.line(LogLevel::Error)
    }

    pub fn warn(&self) -> Line {
        self.line(LogLevel::Warn)
    }

    pub fn info(&self) -> Line {
        self.line(LogLevel::Info)
    }

    pub fn debug(&self) -> Line {
        self.line(LogLevel::Debug)
    }
}

/// One log line being built. Does nothing if its level is filtered out.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    fd: i32,
}

impl Line {
    /// Appends raw bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        if self.fd < 0 {
            return self;
        }
        // Keep room for the newline.
        let room = LINE_MAX - 1 - self.len;
        let n = b.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        if n < b.len() {
            self.buf[LINE_MAX - 4..LINE_MAX - 1].copy_from_slice(b"...");
        }
        self
    }

    /// Appends text.
    pub fn s(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// Appends a number in decimal.
    pub fn dec(self, v: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// Appends a number as `0x...` in lowercase hex.
    pub fn hex(self, v: u64) -> Self {
        let mut digits = [0u8; 18];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        i -= 2;
        digits[i] = b'0';
        digits[i + 1] = b'x';
        self.bytes(&digits[i..])
    }

    /// Appends `errno N`.
    pub fn errno(self, e: Errno) -> Self {
        self.s("errno ").dec(e.raw() as u64)
    }

    /// The line so far, without the newline.
    pub fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line. A failing log write is ignored: there is nowhere
    /// left to report it.
    pub fn emit(mut self) {
        if self.fd < 0 {
            return;
        }
        self.buf[self.len] = b'\n';
        let _ = revenant_arch::sys::write_all(self.fd, &self.buf[..self.len + 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_and_text() {
        let log = Log::new(99, LogLevel::Debug as u32);
        let line = log.error().s("map ").hex(0x7f00_1000).s(" len ").dec(4096).s(" ").errno(Errno::EINVAL);
        assert_eq!(line.text(), b"blob: error: map 0x7f001000 len 4096 errno 22");
        assert_eq!(log.info().dec(0).hex(0).text(), b"blob: 00x0");
        assert_eq!(log.info().dec(u64::MAX).text(), b"blob: 18446744073709551615");
    }

    #[test]
    fn filters_by_level_and_fd() {
        let quiet = Log::new(2, LogLevel::Warn as u32);
        assert!(quiet.info().s("x").text().is_empty());
        assert!(!quiet.warn().s("x").text().is_empty());
        assert!(Log::new(-1, 4).error().s("x").text().is_empty());
    }

    #[test]
    fn cuts_long_lines() {
        let log = Log::new(2, 4);
        let long = [b'a'; 600];
        let line = log.info().bytes(&long);
        assert_eq!(line.text().len(), LINE_MAX - 1);
        assert!(line.text().ends_with(b"..."));
    }
}
