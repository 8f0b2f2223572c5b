//! Time conversion utilities for FUSE operations.

use std::convert::TryFrom;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

/// Converts a `SystemTime` to a tuple of (seconds, nanoseconds) since the Unix epoch.
///
/// This handles times before the Unix epoch by returning negative seconds.
/// Values that overflow `i64` are saturated to `i64::MAX` or `i64::MIN`.
pub(crate) fn time_from_system_time(system_time: &SystemTime) -> (i64, u32) {
    // Convert to signed 64-bit time with epoch at 0
    match system_time.duration_since(UNIX_EPOCH) {
        Ok(duration) => match i64::try_from(duration.as_secs()) {
            Ok(secs) => (secs, duration.subsec_nanos()),
            Err(_) => (i64::MAX, 999_999_999),
        },
        Err(before_epoch_error) => {
            let d = before_epoch_error.duration();
            let secs = d.as_secs();
            let nanos = d.subsec_nanos();

            // Minus min representable value.
            if (secs, nanos) >= (i64::MAX as u64 + 1, 0) {
                // Saturate.
                (i64::MIN, 0)
            } else if nanos == 0 {
                (-(secs as i64), 0)
            } else {
                (-(secs as i64) - 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// Converts a tuple of (seconds, nanoseconds) since the Unix epoch to a `SystemTime`.
///
/// As the kernel's `timespec`: the nanoseconds count forward from the whole
/// second, before the epoch too (`(-2, 500_000_000)` is 1.5 s before it).
/// Never panics: nanoseconds past a second carry into the seconds, and a
/// time past what `SystemTime` holds becomes the nearest it holds (where
/// `time_t` is 64 bits, `SystemTime` holds every `(i64, 0..1e9)` time).
///
/// unifs: changed from fuser 0.18.0, which computed
/// `UNIX_EPOCH - Duration::new(-secs, nsecs)` for `secs < 0` (the nanoseconds
/// taken off instead of added, and `-secs` overflowing for `i64::MIN`).
pub(crate) fn system_time_from_time(secs: i64, nsecs: u32) -> SystemTime {
    let (secs, nsecs) = match secs.checked_add(i64::from(nsecs / 1_000_000_000)) {
        Some(secs) => (secs, nsecs % 1_000_000_000),
        None => (i64::MAX, 999_999_999),
    };
    let nanos = Duration::from_nanos(u64::from(nsecs));
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    match whole.map(|t| t.checked_add(nanos).unwrap_or(t)) {
        Some(t) => t,
        None => nearest(secs < 0),
    }
}

/// The earliest (`before`) or latest time `SystemTime` holds, to a second:
/// found by halving, for a platform whose `SystemTime` is narrower than i64
/// seconds.
fn nearest(before: bool) -> SystemTime {
    let step = |t: SystemTime, d: Duration| match before {
        true => t.checked_sub(d),
        false => t.checked_add(d),
    };
    let (mut t, mut d) = (UNIX_EPOCH, Duration::from_secs(1 << 62));
    while d >= Duration::from_secs(1) {
        if let Some(next) = step(t, d) {
            t = next;
        } else {
            d /= 2;
        }
    }
    t
}

#[cfg(test)]
mod test {
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    use crate::time::system_time_from_time;
    use crate::time::time_from_system_time;

    #[test]
    fn test_time_from_system_time_negative() {
        let before_epoch = UNIX_EPOCH - Duration::new(1, 200_000_000);
        let (secs, nanos) = time_from_system_time(&before_epoch);
        assert_eq!((-2, 800_000_000), (secs, nanos));
    }

    #[test]
    fn test_time_from_system_time_i64_min_boundary() {
        // timespec { tv_sec: i64::MIN, tv_nsec: 0 }
        let min_system_time = UNIX_EPOCH - Duration::new(i64::MAX as u64 + 1, 0);
        let (secs, nanos) = time_from_system_time(&min_system_time);
        assert_eq!((i64::MIN, 0), (secs, nanos));

        let min_system_time_plus_eps = UNIX_EPOCH - Duration::new(i64::MAX as u64, 800_000_000);
        let (secs, nanos) = time_from_system_time(&min_system_time_plus_eps);
        assert_eq!((i64::MIN, 200_000_000), (secs, nanos));

        let min_system_time_plus_one = UNIX_EPOCH - Duration::new(i64::MAX as u64, 0);
        let (secs, nanos) = time_from_system_time(&min_system_time_plus_one);
        assert_eq!((i64::MIN + 1, 0), (secs, nanos));
    }

    #[test]
    fn test_system_time_from_time_counts_nanoseconds_forward() {
        assert_eq!(
            system_time_from_time(-2, 500_000_000),
            UNIX_EPOCH - Duration::new(1, 500_000_000)
        );
        assert_eq!(
            system_time_from_time(-1, 999_999_999),
            UNIX_EPOCH - Duration::from_nanos(1)
        );
        assert_eq!(
            system_time_from_time(1, 1_500_000_000),
            UNIX_EPOCH + Duration::new(2, 500_000_000)
        );
    }

    #[test]
    fn test_system_time_from_time_round_trips_every_i64_time() {
        for t in [
            (i64::MIN, 0),
            (i64::MIN, 1),
            (i64::MIN, 999_999_999),
            (i64::MIN + 1, 999_999_999),
            (-1, 0),
            (-1, 1),
            (0, 0),
            (i64::MAX, 0),
            (i64::MAX, 999_999_999),
        ] {
            assert_eq!(time_from_system_time(&system_time_from_time(t.0, t.1)), t);
        }
        // Past the end: the nearest time held.
        assert_eq!(
            time_from_system_time(&system_time_from_time(i64::MAX, 1_500_000_000)),
            (i64::MAX, 999_999_999)
        );
    }
}
