//! `snapshot-create-as`'s arguments as virsh reads them: the `--diskspec`
//! and `--memspec` strings (comma-separated fields, a doubled comma being
//! a comma of the value, as virsh's `vshStringToArray`) and the
//! `<domainsnapshot>` they make, byte for byte what `virsh
//! snapshot-create-as --print-xml` prints (libvirt's
//! `tests/virshtestdata/snapshot-create-args`).

use std::fmt::Write as _;

use snapshot_conf::{SnapshotMode, SourceKind, StorageFormat};

/// The fields of a `--diskspec`, for messages.
const DISKSPEC_FORM: &str = "disk[,snapshot=type][,driver=type][,stype=type][,file=name]";
/// The fields of a `--memspec`, for messages.
const MEMSPEC_FORM: &str = "[file=]name[,snapshot=type]";

/// A `--diskspec` or `--memspec` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse {what} '{spec}': {problem}")]
pub struct SpecError {
    /// `diskspec` or `memspec`.
    what: &'static str,
    /// The spec as given.
    spec: String,
    /// What is wrong and what is accepted.
    problem: String,
}

/// Splits `spec` at single commas; a doubled comma is a comma of the
/// field (`file=a,,b` is `file=a,b`). A trailing comma adds no field, as
/// in virsh.
fn split_fields(spec: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            fields.last_mut().expect("one field at least").push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            fields.last_mut().expect("one field at least").push(',');
        } else {
            fields.push(String::new());
        }
    }
    if fields.len() > 1 && fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    fields
}

/// Sets `slot` from `field` when it starts with `key`; `Err` when it was
/// set already.
fn take<'f>(field: &'f str, key: &str, slot: &mut Option<&'f str>) -> Result<bool, String> {
    let Some(value) = field.strip_prefix(key) else {
        return Ok(false);
    };
    if slot.is_some() {
        return Err(format!(
            "field '{key}' is given twice; give each field once"
        ));
    }
    *slot = Some(value);
    Ok(true)
}

fn modes(accepted: &[SnapshotMode]) -> String {
    let names: Vec<&str> = accepted.iter().map(|m| m.as_str()).collect();
    names.join(", ")
}

/// One `--diskspec`: `disk[,snapshot=type][,driver=type][,stype=type][,file=name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The disk's target (`vda`) or source path.
    pub disk: String,
    /// `snapshot=`: no, internal, external or manual.
    pub snapshot: Option<SnapshotMode>,
    /// `driver=`: the new image's format.
    pub driver: Option<StorageFormat>,
    /// `stype=`: file, block or network.
    pub stype: Option<SourceKind>,
    /// `file=`: the new image (for a network image, `PROTOCOL:NAME`).
    pub file: Option<String>,
}

impl DiskSpec {
    /// Reads a `--diskspec`.
    ///
    /// # Errors
    /// An empty disk, an unknown or repeated field, or a value not
    /// accepted, each naming what is.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        Self::parse_fields(spec).map_err(|problem| SpecError {
            what: "diskspec",
            spec: spec.to_string(),
            problem,
        })
    }

    fn parse_fields(spec: &str) -> Result<Self, String> {
        let fields = split_fields(spec);
        let (disk, rest) = fields.split_first().expect("one field at least");
        if disk.is_empty() {
            return Err(format!(
                "no disk is named; start with the disk's target (vda) or source path: {DISKSPEC_FORM}"
            ));
        }
        let (mut snapshot, mut driver, mut stype, mut file) = (None, None, None, None);
        for field in rest {
            let known = take(field, "snapshot=", &mut snapshot)?
                || take(field, "driver=", &mut driver)?
                || take(field, "stype=", &mut stype)?
                || take(field, "file=", &mut file)?;
            if !known {
                return Err(format!(
                    "unknown field '{field}'; the fields are {DISKSPEC_FORM} (write a comma inside a value as ',,')"
                ));
            }
        }
        let snapshot = snapshot
            .map(|s| {
                s.parse::<SnapshotMode>().map_err(|()| {
                    format!(
                        "snapshot='{s}' is not a snapshot mode; use {}",
                        modes(SnapshotMode::ALL)
                    )
                })
            })
            .transpose()?;
        let driver = driver
            .map(|d| {
                d.parse::<StorageFormat>().map_err(|()| {
                    format!(
                        "driver='{d}' is not an image format; use qcow2 (the default for a new image) or {}",
                        StorageFormat::expected()
                    )
                })
            })
            .transpose()?;
        let stype = stype
            .map(|t| match t.parse::<SourceKind>() {
                Ok(k @ (SourceKind::File | SourceKind::Block | SourceKind::Network)) => Ok(k),
                _ => Err(format!(
                    "stype='{t}' is not a storage type for a snapshot image; use file, block or network"
                )),
            })
            .transpose()?;
        if stype == Some(SourceKind::Network)
            && let Some(f) = file
            && !f
                .split_once(':')
                .is_some_and(|(p, n)| !p.is_empty() && !n.is_empty())
        {
            return Err(format!(
                "file='{f}': a network image is named PROTOCOL:NAME, e.g. file=rbd:pool/image"
            ));
        }
        Ok(Self {
            disk: disk.clone(),
            snapshot,
            driver,
            stype,
            file: file.map(str::to_string),
        })
    }

    /// The `<disk>` element, indented for `<disks>`, as virsh writes it.
    fn write_xml(&self, out: &mut String) {
        let _ = write!(out, "    <disk name='{}'", escape(&self.disk));
        if let Some(s) = self.snapshot {
            let _ = write!(out, " snapshot='{s}'");
        }
        if let Some(t) = self.stype {
            let _ = write!(out, " type='{t}'");
        }
        if self.driver.is_none() && self.file.is_none() {
            out.push_str("/>\n");
            return;
        }
        out.push_str(">\n");
        if let Some(d) = self.driver {
            let _ = writeln!(out, "      <driver type='{d}'/>");
        }
        if let Some(f) = &self.file {
            match self.stype {
                Some(SourceKind::Block) => {
                    let _ = writeln!(out, "      <source dev='{}'/>", escape(f));
                }
                Some(SourceKind::Network) => {
                    let (protocol, name) = f.split_once(':').unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "      <source protocol='{}' name='{}'/>",
                        escape(protocol),
                        escape(name)
                    );
                }
                _ => {
                    let _ = writeln!(out, "      <source file='{}'/>", escape(f));
                }
            }
        }
        out.push_str("    </disk>\n");
    }
}

/// The `--memspec`: `[file=]name[,snapshot=type]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemSpec {
    /// `snapshot=`: no, internal or external.
    pub snapshot: Option<SnapshotMode>,
    /// The memory file: `file=NAME`, or an absolute path alone.
    pub file: Option<String>,
}

impl MemSpec {
    /// Reads a `--memspec`.
    ///
    /// # Errors
    /// An unknown or repeated field, a bare name that is not an absolute
    /// path, or a mode not accepted.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        Self::parse_fields(spec).map_err(|problem| SpecError {
            what: "memspec",
            spec: spec.to_string(),
            problem,
        })
    }

    fn parse_fields(spec: &str) -> Result<Self, String> {
        let fields = split_fields(spec);
        let (mut snapshot, mut file) = (None, None);
        for field in &fields {
            let known =
                take(field, "snapshot=", &mut snapshot)? || take(field, "file=", &mut file)?;
            if known {
                continue;
            }
            if field.starts_with('/') {
                if file.is_some() {
                    return Err("the memory file is given twice; give it once".to_string());
                }
                file = Some(field.as_str());
                continue;
            }
            let problem = if field.contains('=') || field.is_empty() {
                format!("unknown field '{field}'")
            } else {
                format!(
                    "'{field}' is not an absolute path (a memory file given alone starts with '/'; otherwise write file={field})"
                )
            };
            return Err(format!(
                "{problem}; the fields are {MEMSPEC_FORM} (write a comma inside a value as ',,')"
            ));
        }
        let accepted = [
            SnapshotMode::No,
            SnapshotMode::Internal,
            SnapshotMode::External,
        ];
        let snapshot = snapshot
            .map(|s| match s.parse::<SnapshotMode>() {
                Ok(m) if accepted.contains(&m) => Ok(m),
                _ => Err(format!(
                    "snapshot='{s}' is not a memory snapshot mode; use {}",
                    modes(&accepted)
                )),
            })
            .transpose()?;
        Ok(Self {
            snapshot,
            file: file.map(str::to_string),
        })
    }
}

/// What `snapshot-create-as` was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotArgs {
    /// `<name>`.
    pub name: Option<String>,
    /// `<description>`.
    pub description: Option<String>,
    /// `<memory>`.
    pub memory: Option<MemSpec>,
    /// `<disks>`, when any `--diskspec` was given.
    pub disks: Vec<DiskSpec>,
}

impl SnapshotArgs {
    /// The `<domainsnapshot>`, as virsh builds it (ending in one newline).
    #[must_use]
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<domainsnapshot>\n");
        if let Some(n) = &self.name {
            let _ = writeln!(out, "  <name>{}</name>", escape(n));
        }
        if let Some(d) = &self.description {
            let _ = writeln!(out, "  <description>{}</description>", escape(d));
        }
        if let Some(m) = &self.memory {
            out.push_str("  <memory");
            if let Some(s) = m.snapshot {
                let _ = write!(out, " snapshot='{s}'");
            }
            if let Some(f) = &m.file {
                let _ = write!(out, " file='{}'", escape(f));
            }
            out.push_str("/>\n");
        }
        if !self.disks.is_empty() {
            out.push_str("  <disks>\n");
            for d in &self.disks {
                d.write_xml(&mut out);
            }
            out.push_str("  </disks>\n");
        }
        out.push_str("</domainsnapshot>\n");
        out
    }
}

/// Escapes text for element content or a quoted attribute as libvirt's
/// `virBufferEscapeString` does: the five XML specials become entities,
/// other control characters than tab, newline and carriage return are
/// dropped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if u32::from(c) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fields_split_at_single_commas_like_virsh() {
        assert_eq!(split_fields("vda"), ["vda"]);
        assert_eq!(split_fields("vda,file=a,,b"), ["vda", "file=a,b"]);
        assert_eq!(split_fields("a,,,b"), ["a,", "b"]);
        assert_eq!(split_fields("a,,,,b"), ["a,,b"]);
        assert_eq!(split_fields(",,a"), [",a"]);
        assert_eq!(split_fields("a,b,"), ["a", "b"]);
        assert_eq!(split_fields("a,,"), ["a,"]);
        assert_eq!(split_fields(""), [""]);
    }

    #[test]
    fn test_diskspec_fields_and_refusals() {
        let d = DiskSpec::parse("vda,snapshot=external,driver=qcow2,stype=block,file=/dev/x")
            .expect("valid");
        assert_eq!(d.snapshot, Some(SnapshotMode::External));
        assert_eq!(d.driver, Some(StorageFormat::Qcow2));
        assert_eq!(d.stype, Some(SourceKind::Block));
        assert_eq!(d.file.as_deref(), Some("/dev/x"));
        for (spec, says) in [
            (
                "vda,size=1",
                "unknown field 'size=1'; the fields are disk[,snapshot=type]",
            ),
            ("vda,snapshot=fast", "use no, internal, external, manual"),
            (
                "vda,snapshot=no,snapshot=no",
                "field 'snapshot=' is given twice",
            ),
            ("vda,stype=dir", "use file, block or network"),
            ("vda,driver=ext4", "driver='ext4' is not an image format"),
            (",snapshot=no", "no disk is named"),
            ("vda,stype=network,file=img", "PROTOCOL:NAME"),
        ] {
            let e = DiskSpec::parse(spec).expect_err(spec).to_string();
            assert!(
                e.starts_with(&format!("unable to parse diskspec '{spec}': ")) && e.contains(says),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn test_memspec_fields_and_refusals() {
        let m = MemSpec::parse("/m,snapshot=external").expect("valid");
        assert_eq!(m.file.as_deref(), Some("/m"));
        assert_eq!(m.snapshot, Some(SnapshotMode::External));
        assert_eq!(
            MemSpec::parse("file=d,,e").expect("valid").file.as_deref(),
            Some("d,e")
        );
        for (spec, says) in [
            ("mem", "'mem' is not an absolute path"),
            ("/a,/b", "the memory file is given twice"),
            ("file=/a,/b", "the memory file is given twice"),
            ("/a,file=/b", "field 'file=' is given twice"),
            ("/a,snapshot=manual", "use no, internal, external"),
            (
                "/a,size=1",
                "unknown field 'size=1'; the fields are [file=]name",
            ),
        ] {
            let e = MemSpec::parse(spec).expect_err(spec).to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn test_escape_like_libvirt() {
        assert_eq!(
            escape("a&b<c>'\"\u{1}\tz"),
            "a&amp;b&lt;c&gt;&apos;&quot;\tz"
        );
    }
}
