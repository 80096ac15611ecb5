//! [`SizePolicy`]: how much copy-on-write space a classic snapshot gets.

use std::fmt;
use std::str::FromStr;

/// Environment variable the CLI reads the [`SizePolicy`] from (`20%`,
/// `512M`).
pub const SIZE_ENV: &str = "VIRTSNAP_LVM_SNAPSHOT_SIZE";

/// The copy-on-write space of a classic snapshot: what the origin may
/// change before the snapshot overflows and is lost. Thin snapshots share
/// their pool and need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizePolicy {
    /// A percentage of the origin's size (`20%`); 100 % and more never
    /// overflows.
    PercentOfOrigin(u32),
    /// A fixed number of bytes (`512M`).
    Bytes(u64),
}

impl Default for SizePolicy {
    /// 20 % of the origin, LVM's usual advice for short-lived snapshots.
    fn default() -> Self {
        Self::PercentOfOrigin(20)
    }
}

impl SizePolicy {
    /// The space for a snapshot of an origin of `origin` bytes, rounded up
    /// to whole extents of `extent` bytes (at least one).
    #[must_use]
    pub fn bytes_for(self, origin: u64, extent: u64) -> u64 {
        let wanted = match self {
            Self::PercentOfOrigin(p) => {
                u64::try_from(u128::from(origin) * u128::from(p) / 100).unwrap_or(u64::MAX)
            }
            Self::Bytes(b) => b,
        };
        let extent = extent.max(512);
        wanted.div_ceil(extent).max(1).saturating_mul(extent)
    }
}

impl fmt::Display for SizePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PercentOfOrigin(p) => write!(f, "{p}%"),
            Self::Bytes(b) => write!(f, "{b}B"),
        }
    }
}

/// Why a [`SizePolicy`] could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid LVM snapshot size {given:?}: {reason}; give a percentage of the origin (20%) or a \
     size with a unit (512M, 2G; K, M, G and T are powers of 1024, B bytes)"
)]
pub struct SizeError {
    /// What was given.
    pub given: String,
    /// Why it is wrong.
    pub reason: &'static str,
}

impl FromStr for SizePolicy {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| SizeError {
            given: s.to_string(),
            reason,
        };
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: u32 = p
                .trim()
                .parse()
                .map_err(|_| error("not a whole percentage"))?;
            if p == 0 {
                return Err(error("0% leaves no space for changes"));
            }
            return Ok(Self::PercentOfOrigin(p));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| error("no number"))?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            "T" | "TB" | "TIB" => 40,
            "" => return Err(error("the unit is missing")),
            _ => return Err(error("unknown unit")),
        };
        let bytes = n
            .checked_shl(shift)
            .filter(|b| b >> shift == n)
            .ok_or_else(|| error("too large"))?;
        if bytes == 0 {
            return Err(error("0 leaves no space for changes"));
        }
        Ok(Self::Bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_parse_as_lvm_users_write_them() {
        assert_eq!("20%".parse(), Ok(SizePolicy::PercentOfOrigin(20)));
        assert_eq!(" 150 % ".parse(), Ok(SizePolicy::PercentOfOrigin(150)));
        assert_eq!("512M".parse(), Ok(SizePolicy::Bytes(512 * MIB)));
        assert_eq!("2g".parse(), Ok(SizePolicy::Bytes(2 << 30)));
        assert_eq!("4096B".parse(), Ok(SizePolicy::Bytes(4096)));
        for bad in [
            "",
            "%",
            "0%",
            "x%",
            "12",
            "12Q",
            "0M",
            "99999999999T",
            "-1M",
        ] {
            let err = bad.parse::<SizePolicy>().expect_err(bad);
            assert!(err.to_string().contains("20%"), "{err}");
        }
    }

    #[test]
    fn space_rounds_up_to_whole_extents() {
        let extent = 4 * MIB;
        assert_eq!(
            SizePolicy::PercentOfOrigin(20).bytes_for(100 * MIB, extent),
            20 * MIB
        );
        assert_eq!(
            SizePolicy::PercentOfOrigin(20).bytes_for(10 * MIB, extent),
            4 * MIB
        );
        assert_eq!(SizePolicy::Bytes(1).bytes_for(10 * MIB, extent), 4 * MIB);
        assert_eq!(SizePolicy::Bytes(9 * MIB).bytes_for(1, extent), 12 * MIB);
        assert_eq!(
            SizePolicy::PercentOfOrigin(200).bytes_for(MIB, MIB),
            2 * MIB
        );
        assert_eq!(SizePolicy::default().to_string(), "20%");
    }
}
