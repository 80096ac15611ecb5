//! The LVM tools as this driver runs them: `lvm COMMAND ARGS` as a child
//! process, and the logical volumes of an `lvs --reportformat json`
//! report ([`LogicalVolume`], [`parse_lvs`]). Human output is never read;
//! a failing command's stderr only goes into its error.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use snapshot_core::driver::DriverError;
use tokio::process::Command;

/// The program: every LVM command is `lvm COMMAND`, which works whether
/// or not the distribution installs the per-command links.
pub const LVM: &str = "lvm";

/// The fields [`lvs`] asks for, in the order [`LogicalVolume`] keeps them.
pub const LV_FIELDS: &str = "vg_name,lv_name,lv_attr,origin,pool_lv,lv_size,segtype,lv_tags,\
                             lv_time,snap_percent,lv_device_open,lv_merging,\
                             lv_snapshot_invalid,vg_extent_size,lv_active";

/// One logical volume of an `lvs` report.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalVolume {
    /// Its volume group.
    pub vg: String,
    /// Its name in the group.
    pub name: String,
    /// `lv_attr`, the ten characters `lvs` shows (`owi-a-s---`).
    pub attr: String,
    /// The volume a snapshot was taken of (empty otherwise).
    pub origin: String,
    /// A thin volume's pool (empty otherwise).
    pub pool: String,
    /// Its size in bytes (a classic snapshot's: its copy-on-write space).
    pub size: u64,
    /// The segment type (`linear`, `thin`, `thin-pool`, ...).
    pub segtype: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// When it was created (seconds since the epoch).
    pub time: Option<i64>,
    /// How full a classic snapshot's space is, in percent.
    pub snap_percent: Option<f64>,
    /// Whether its device is open (a mounted filesystem, a guest).
    pub open: bool,
    /// Whether it is a snapshot merging into its origin.
    pub merging: bool,
    /// Whether it is a classic snapshot that overflowed (or failed a
    /// merge): its data is lost.
    pub invalid: bool,
    /// The volume group's extent size in bytes.
    pub extent_size: u64,
    /// Whether it is active (has a device).
    pub active: bool,
}

impl LogicalVolume {
    /// `VG/LV`, as the LVM tools name it.
    #[must_use]
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.vg, self.name)
    }

    /// Its device, `/dev/VG/LV` (present when active).
    #[must_use]
    pub fn device(&self) -> PathBuf {
        Path::new("/dev").join(&self.vg).join(&self.name)
    }

    /// The `lv_attr` character at `index` (0-based), `'-'` if missing.
    #[must_use]
    pub fn attr_char(&self, index: usize) -> char {
        self.attr.chars().nth(index).unwrap_or('-')
    }

    /// A thin volume (thin snapshots are taken of it).
    #[must_use]
    pub fn is_thin(&self) -> bool {
        self.segtype == "thin"
    }

    /// A classic (copy-on-write) snapshot.
    #[must_use]
    pub fn is_classic_snapshot(&self) -> bool {
        matches!(self.attr_char(0), 's' | 'S')
    }

    /// Writable (`lv_attr` permission `w`).
    #[must_use]
    pub fn writable(&self) -> bool {
        self.attr_char(1) == 'w'
    }

    /// The origin of a merge in progress (`lv_attr` type `O`).
    #[must_use]
    pub fn has_merging_snapshot(&self) -> bool {
        self.attr_char(0) == 'O'
    }

    /// Carries `tag`.
    #[must_use]
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The logical volumes in `lvs --reportformat json` output asked for
/// [`LV_FIELDS`] with `--units b --nosuffix` and epoch times.
///
/// # Errors
/// The text is not such a report; the message says what was wrong.
pub fn parse_lvs(json: &str) -> Result<Vec<LogicalVolume>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON ({e})"))?;
    let mut volumes = Vec::new();
    let reports = doc["report"].as_array().ok_or("no \"report\" list")?;
    for report in reports {
        let Some(list) = report.get("lv") else {
            continue;
        };
        for lv in list.as_array().ok_or("\"lv\" is not a list")? {
            volumes.push(parse_lv(lv)?);
        }
    }
    Ok(volumes)
}

fn parse_lv(lv: &Value) -> Result<LogicalVolume, String> {
    let text = |field: &str| -> Result<String, String> {
        lv.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("volume without field {field}: {lv}"))
    };
    let number = |field: &str| -> Result<u64, String> {
        let t = text(field)?;
        t.parse()
            .map_err(|_| format!("field {field} is not a byte count: {t:?}"))
    };
    let invalid = text("lv_snapshot_invalid")?;
    let attr = text("lv_attr")?;
    Ok(LogicalVolume {
        vg: text("vg_name")?,
        name: text("lv_name")?,
        origin: text("origin")?,
        pool: text("pool_lv")?,
        size: number("lv_size")?,
        segtype: text("segtype")?,
        tags: text("lv_tags")?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        time: text("lv_time")?.parse().ok(),
        snap_percent: text("snap_percent")?.parse().ok(),
        open: text("lv_device_open")? == "open",
        merging: !text("lv_merging")?.is_empty(),
        invalid: (!invalid.is_empty() && invalid != "unknown")
            || matches!(attr.chars().nth(4), Some('I' | 'S' | 'm' | 'M'))
                && attr.starts_with(['s', 'S']),
        extent_size: number("vg_extent_size")?,
        active: text("lv_active")? == "active",
        attr,
    })
}

/// Runs `lvm` with `args` to success and returns its stdout.
///
/// # Errors
/// [`DriverError::Tool`] with LVM's message (or, when `lvm` is missing,
/// how to install it).
pub async fn lvm(args: &[&str]) -> Result<String, DriverError> {
    let shown = || args.iter().map(ToString::to_string).collect::<Vec<_>>();
    let out = Command::new(LVM)
        .args(args)
        .env("LC_ALL", "C")
        // LVM complains about every descriptor it inherits.
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| DriverError::Tool {
            tool: LVM.to_string(),
            args: shown(),
            status: "not started".to_string(),
            stderr: if e.kind() == io::ErrorKind::NotFound {
                "lvm is not installed; install lvm2".to_string()
            } else {
                e.to_string()
            },
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(DriverError::Tool {
        tool: LVM.to_string(),
        args: shown(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The logical volumes `target` names (a volume group, `VG/LV` or a
/// device path), as [`parse_lvs`] reads them.
///
/// # Errors
/// The command fails, or its report cannot be read.
pub async fn lvs(target: &str) -> Result<Vec<LogicalVolume>, DriverError> {
    let out = lvm(&[
        "lvs",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "--config",
        "report/time_format=\"%s\"",
        "-o",
        LV_FIELDS,
        target,
    ])
    .await?;
    parse_lvs(&out).map_err(|e| {
        DriverError::Inconsistent(format!("cannot read the report of lvs {target}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as LVM 2.03.16 printed it in the test guest.
    const REPORT: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"vg_name":"vg0", "lv_name":"o", "lv_attr":"owi-a-s---", "origin":"", "pool_lv":"", "lv_size":"8388608", "segtype":"linear", "lv_tags":"", "lv_time":"1796298228", "snap_percent":"", "lv_device_open":"", "lv_merging":"", "lv_snapshot_invalid":"unknown", "vg_extent_size":"1048576", "lv_active":"active"},
                  {"vg_name":"vg0", "lv_name":"o.s1", "lv_attr":"sri-I-s---", "origin":"o", "pool_lv":"", "lv_size":"1048576", "segtype":"linear", "lv_tags":"virtsnap,other", "lv_time":"1796298229", "snap_percent":"100.00", "lv_device_open":"", "lv_merging":"", "lv_snapshot_invalid":"snapshot invalid", "vg_extent_size":"1048576", "lv_active":"active"},
                  {"vg_name":"vg0", "lv_name":"t.s1", "lv_attr":"Vri---tz-k", "origin":"t", "pool_lv":"pool", "lv_size":"8388608", "segtype":"thin", "lv_tags":"virtsnap", "lv_time":"1796298232", "snap_percent":"", "lv_device_open":"unknown", "lv_merging":"", "lv_snapshot_invalid":"unknown", "vg_extent_size":"1048576", "lv_active":""}
              ]
          }
      ]
  }"#;

    #[test]
    fn a_json_report_is_read_field_by_field() {
        let lvs = parse_lvs(REPORT).expect("a report");
        assert_eq!(lvs.len(), 3);
        let (origin, classic, thin) = (&lvs[0], &lvs[1], &lvs[2]);
        assert_eq!(origin.full_name(), "vg0/o");
        assert_eq!(origin.device(), Path::new("/dev/vg0/o"));
        assert_eq!(origin.size, 8 << 20);
        assert!(origin.writable() && origin.active && !origin.is_thin());
        assert!(!origin.invalid && !origin.is_classic_snapshot());
        assert_eq!(classic.origin, "o");
        assert!(classic.is_classic_snapshot() && !classic.writable());
        assert!(classic.invalid, "an overflowed snapshot is invalid");
        assert_eq!(classic.snap_percent, Some(100.0));
        assert_eq!(classic.tags, ["virtsnap", "other"]);
        assert!(classic.has_tag("virtsnap") && !classic.has_tag("virt"));
        assert_eq!(classic.time, Some(1_796_298_229));
        assert!(thin.is_thin() && !thin.active && !thin.invalid);
        assert_eq!(thin.pool, "pool");
    }

    #[test]
    fn a_report_that_is_not_one_is_refused_with_the_reason() {
        assert!(
            parse_lvs("Volume group not found")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(parse_lvs("{}").unwrap_err().contains("report"));
        let missing = r#"{"report":[{"lv":[{"vg_name":"vg0"}]}]}"#;
        assert!(parse_lvs(missing).unwrap_err().contains("without field"));
        let bad = REPORT.replace("\"8388608\"", "\"8M\"");
        assert!(parse_lvs(&bad).unwrap_err().contains("lv_size"));
        assert_eq!(parse_lvs(r#"{"report":[{"vg":[]}]}"#), Ok(Vec::new()));
    }
}
