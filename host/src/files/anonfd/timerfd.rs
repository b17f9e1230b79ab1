//! timerfd: its clock, the time left and the interval, expirations not
//! read yet (`TFD_IOC_SET_TICKS`), and the `timerfd_settime` flags. The
//! kernel shows the time left even for an absolute timer, so one is set
//! again at "now + left" on its clock. A periodic timer that expired with
//! its expirations not read yet shows no time left (the kernel moves it to
//! its next period only when it is read): it is set again to fire one
//! interval from now.

use anyhow::{Context, Result, bail};
use nix::libc;
use revenant_images::messages::{FdType, FileEntry, FownEntry, TimerfdEntry};

use super::field;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    pub clock: u32,
    pub ticks: u64,
    pub settime_flags: u32,
    /// (seconds, nanoseconds) left, and of the interval.
    pub value: (u64, u64),
    pub interval: (u64, u64),
}

const CLOCKS: [u32; 5] = [
    libc::CLOCK_REALTIME as u32,
    libc::CLOCK_MONOTONIC as u32,
    libc::CLOCK_BOOTTIME as u32,
    libc::CLOCK_REALTIME_ALARM as u32,
    libc::CLOCK_BOOTTIME_ALARM as u32,
];

pub fn dump(fdinfo: &str, what: &str) -> Result<Timer> {
    let num = |key: &str, radix: u32| -> Result<u64> {
        let v = field(fdinfo, key, what)?;
        let digits = if radix == 8 { v.trim_start_matches('0') } else { v };
        if digits.is_empty() {
            return Ok(0);
        }
        u64::from_str_radix(digits, radix).with_context(|| format!("{what}: {key} {v:?}"))
    };
    let pair = |key: &str| -> Result<(u64, u64)> {
        let v = field(fdinfo, key, what)?;
        let inner = v.trim_start_matches('(').trim_end_matches(')');
        let (s, ns) = inner.split_once(',').with_context(|| format!("{what}: {key} {v:?}"))?;
        let parse = |x: &str| x.trim().parse::<u64>().with_context(|| format!("{what}: {key} {v:?}"));
        Ok((parse(s)?, parse(ns)?))
    };
    Ok(Timer {
        clock: num("clockid", 10)? as u32,
        ticks: num("ticks", 10)?,
        settime_flags: num("settime flags", 8)? as u32,
        value: pair("it_value")?,
        interval: pair("it_interval")?,
    })
}

pub fn entry(id: u32, flags: u32, fown: FownEntry, t: &Timer) -> FileEntry {
    FileEntry {
        r#type: FdType::Timerfd as i32,
        id,
        tfd: Some(TimerfdEntry {
            id,
            flags,
            fown,
            clockid: t.clock,
            ticks: t.ticks,
            settime_flags: t.settime_flags,
            vsec: t.value.0,
            vnsec: t.value.1,
            isec: t.interval.0,
            insec: t.interval.1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn from_entry(e: &TimerfdEntry, at: &str) -> Result<Timer> {
    if !CLOCKS.contains(&e.clockid) {
        bail!("{at}: tfd: clockid {}: not a clock a timerfd can use", e.clockid);
    }
    let known = (libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET) as u32;
    if e.settime_flags & !known != 0 {
        bail!("{at}: tfd: settime_flags {:#x}: unknown flags", e.settime_flags);
    }
    let time = |s: u64, ns: u64, name: &str| {
        if ns >= 1_000_000_000 || s > i64::MAX as u64 / 2 {
            bail!("{at}: tfd: {name} ({s}, {ns}) is not a time");
        }
        Ok((s, ns))
    };
    Ok(Timer {
        clock: e.clockid,
        ticks: e.ticks,
        settime_flags: e.settime_flags,
        value: time(e.vsec, e.vnsec, "value")?,
        interval: time(e.isec, e.insec, "interval")?,
    })
}

/// `_IOW('T', 0, u64)`: sets the expirations a read will return.
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

/// # Safety
/// Creates a descriptor; nothing else.
pub unsafe fn make(t: &Timer) -> Result<i32, &'static str> {
    let ts = |(s, ns): (u64, u64)| libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as libc::c_long };
    // SAFETY: plain system calls on our own descriptor and structs.
    unsafe {
        let fd = libc::timerfd_create(t.clock as libc::c_int, libc::TFD_CLOEXEC);
        if fd < 0 {
            return Err("creating a timerfd");
        }
        let left = if t.value == (0, 0) { t.interval } else { t.value };
        if left != (0, 0) {
            let mut value = ts(left);
            if t.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0 {
                let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                if libc::clock_gettime(t.clock as libc::clockid_t, &mut now) < 0 {
                    return Err("reading a timerfd's clock");
                }
                value.tv_sec += now.tv_sec;
                value.tv_nsec += now.tv_nsec;
                if value.tv_nsec >= 1_000_000_000 {
                    value.tv_sec += 1;
                    value.tv_nsec -= 1_000_000_000;
                }
            }
            let spec = libc::itimerspec { it_interval: ts(t.interval), it_value: value };
            if libc::timerfd_settime(fd, t.settime_flags as libc::c_int, &spec, std::ptr::null_mut()) < 0 {
                return Err("arming a timerfd");
            }
        }
        if t.ticks != 0 && libc::ioctl(fd, TFD_IOC_SET_TICKS, &t.ticks) < 0 {
            return Err("setting a timerfd's expirations (TFD_IOC_SET_TICKS)");
        }
        Ok(fd)
    }
}
