//! A reader for the parts of a qcow2 image a snapshot driver needs: the
//! header (version, virtual size, backing file and its format, feature
//! bits) and the internal snapshot table. Reading them directly costs one
//! or two small reads instead of a `qemu-img` process, which matters when
//! a listing touches many images. Writing qcow2 is left to QEMU.
//!
//! The layout follows QEMU's `docs/interop/qcow2.txt`; every length read
//! from the file is checked before it is used, so a damaged or hostile
//! image gives an error, never a huge allocation or a panic.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::Path;

use snapshot_core::driver::DriverError;

/// The qcow2 magic, `QFI\xfb`.
pub const MAGIC: [u8; 4] = [b'Q', b'F', b'I', 0xfb];

/// QEMU's limit on internal snapshots per image.
const MAX_SNAPSHOTS: u32 = 65_536;
/// Header extension: the backing file's format.
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// Header extension: the end of the list.
const EXT_END: u32 = 0;
/// Incompatible feature bit: the image is marked corrupt.
const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit: the image is dirty (refcounts need repair).
const INCOMPAT_DIRTY: u64 = 1;
/// Incompatible feature bit: the data lives in an external data file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// Why an image could not be read as qcow2.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The image.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not qcow2 or its header is damaged.
    #[error("{path} is not a valid qcow2 image: {reason}")]
    Invalid {
        /// The image.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<Qcow2Error> for DriverError {
    fn from(e: Qcow2Error) -> Self {
        match e {
            Qcow2Error::Io { path, source } => Self::Io {
                op: "reading",
                path: path.into(),
                source,
            },
            invalid @ Qcow2Error::Invalid { .. } => Self::Inconsistent(invalid.to_string()),
        }
    }
}

/// An internal snapshot as the snapshot table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Snapshot {
    /// QEMU's id (a decimal number as text).
    pub id: String,
    /// The name (tag).
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Nanoseconds of the creation time.
    pub date_nsec: u32,
    /// The guest clock when taken, nanoseconds.
    pub vm_clock_nsec: u64,
    /// Bytes of saved VM state (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// The virtual disk size when taken, if recorded (version 3).
    pub disk_size: Option<u64>,
}

/// What a qcow2 header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    /// 2 or 3.
    pub version: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// The backing file, as written in the image (absolute or relative
    /// to the image's directory).
    pub backing_file: Option<String>,
    /// The backing file's format, when the image records it.
    pub backing_format: Option<String>,
    /// Incompatible feature bits (version 3).
    pub incompatible_features: u64,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Offset of the snapshot table.
    pub snapshots_offset: u64,
}

impl Qcow2Header {
    /// Whether QEMU marked the image corrupt (it must be repaired with
    /// `qemu-img check -r all` before use).
    #[must_use]
    pub fn is_corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }

    /// Whether the image was not closed cleanly (lazy refcounts).
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// Whether the guest data lives in an external data file.
    #[must_use]
    pub fn has_data_file(&self) -> bool {
        self.incompatible_features & INCOMPAT_DATA_FILE != 0
    }
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// An open qcow2 image being read.
struct Reader<'a> {
    file: File,
    path: &'a Path,
    len: u64,
}

impl<'a> Reader<'a> {
    fn open(path: &'a Path) -> Result<Self, Qcow2Error> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        Ok(Self { file, path, len })
    }

    fn invalid(&self, reason: impl Into<String>) -> Qcow2Error {
        Qcow2Error::Invalid {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Reads `len` bytes at `offset`, refusing ranges past the end.
    fn read_at(&mut self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>, Qcow2Error> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(self.invalid(format!("the {what} lies past the end of the file")));
        }
        let mut buf = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|e| io_err(self.path, e))?;
        Ok(buf)
    }
}

fn io_err(path: &Path, source: io::Error) -> Qcow2Error {
    Qcow2Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether the file at `path` starts with the qcow2 magic.
///
/// # Errors
/// The file cannot be read.
pub fn is_qcow2(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path)?;
    let mut read = 0;
    while read < 4 {
        match file.read(&mut magic[read..])? {
            0 => return Ok(false),
            n => read += n,
        }
    }
    Ok(magic == MAGIC)
}

/// Reads the header of the qcow2 image at `path`.
///
/// # Errors
/// The file cannot be read or is not a valid qcow2 image.
pub fn read_header(path: &Path) -> Result<Qcow2Header, Qcow2Error> {
    let mut r = Reader::open(path)?;
    header(&mut r)
}

fn header(r: &mut Reader<'_>) -> Result<Qcow2Header, Qcow2Error> {
    if r.len < 72 {
        return Err(r.invalid("the file is shorter than a qcow2 header"));
    }
    let base = r.read_at(0, 72, "header")?;
    if base[0..4] != MAGIC {
        return Err(r.invalid("it does not start with the qcow2 magic"));
    }
    let version = be_u32(&base, 4);
    if version != 2 && version != 3 {
        return Err(r.invalid(format!("unsupported qcow2 version {version}")));
    }
    let backing_offset = be_u64(&base, 8);
    let backing_size = be_u32(&base, 16);
    let cluster_bits = be_u32(&base, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(r.invalid(format!("cluster bits {cluster_bits} out of range 9..=21")));
    }
    let size = be_u64(&base, 24);
    let nb_snapshots = be_u32(&base, 60);
    let snapshots_offset = be_u64(&base, 64);
    if nb_snapshots > MAX_SNAPSHOTS {
        return Err(r.invalid(format!(
            "{nb_snapshots} snapshots exceed QEMU's limit of {MAX_SNAPSHOTS}"
        )));
    }
    let (incompatible_features, header_length) = if version == 3 {
        let v3 = r.read_at(72, 32, "version 3 header")?;
        (be_u64(&v3, 0), u64::from(be_u32(&v3, 28)))
    } else {
        (0, 72)
    };
    if header_length < 72 {
        return Err(r.invalid(format!("header length {header_length} is below 72")));
    }
    let cluster_size = 1u64 << cluster_bits;
    let backing_file = if backing_offset != 0 && backing_size != 0 {
        if backing_size > 1023 {
            return Err(r.invalid(format!(
                "the backing file name is {backing_size} bytes, more than 1023"
            )));
        }
        let raw = r.read_at(backing_offset, backing_size as usize, "backing file name")?;
        Some(String::from_utf8_lossy(&raw).into_owned())
    } else {
        None
    };
    // Header extensions run from the header's end to the first cluster's
    // end (or the backing file name, which follows them).
    let mut backing_format = None;
    let limit = if backing_offset != 0 {
        backing_offset.min(cluster_size)
    } else {
        cluster_size
    };
    let mut at = header_length;
    while at + 8 <= limit.min(r.len) {
        let ext = r.read_at(at, 8, "header extension")?;
        let (kind, len) = (be_u32(&ext, 0), u64::from(be_u32(&ext, 4)));
        if kind == EXT_END {
            break;
        }
        if at + 8 + len > limit {
            return Err(r.invalid("a header extension runs past the first cluster"));
        }
        if kind == EXT_BACKING_FORMAT {
            let name = r.read_at(at + 8, usize::try_from(len).unwrap_or(0), "backing format")?;
            backing_format = Some(String::from_utf8_lossy(&name).into_owned());
        }
        at += 8 + len.div_ceil(8) * 8;
    }
    Ok(Qcow2Header {
        version,
        size,
        cluster_size,
        backing_file,
        backing_format,
        incompatible_features,
        nb_snapshots,
        snapshots_offset,
    })
}

/// Reads the internal snapshot table of the qcow2 image at `path`, in
/// table order (oldest first).
///
/// # Errors
/// The file cannot be read or its header or table is damaged.
pub fn read_snapshots(path: &Path) -> Result<(Qcow2Header, Vec<Qcow2Snapshot>), Qcow2Error> {
    let mut r = Reader::open(path)?;
    let h = header(&mut r)?;
    let mut snapshots = Vec::with_capacity(h.nb_snapshots as usize);
    let mut at = h.snapshots_offset;
    for i in 0..h.nb_snapshots {
        let fixed = r.read_at(at, 40, "snapshot table")?;
        let id_len = usize::from(be_u16(&fixed, 12));
        let name_len = usize::from(be_u16(&fixed, 14));
        let extra_len = be_u32(&fixed, 36) as usize;
        if extra_len > 1024 {
            return Err(r.invalid(format!(
                "snapshot {i} has {extra_len} bytes of extra data, more than 1024"
            )));
        }
        let rest = r.read_at(
            at + 40,
            extra_len + id_len + name_len,
            "snapshot table entry",
        )?;
        let mut vm_state_size = u64::from(be_u32(&fixed, 32));
        let mut disk_size = None;
        if extra_len >= 8 {
            vm_state_size = vm_state_size.max(be_u64(&rest, 0));
        }
        if extra_len >= 16 {
            disk_size = Some(be_u64(&rest, 8));
        }
        let id = String::from_utf8_lossy(&rest[extra_len..extra_len + id_len]).into_owned();
        let name = String::from_utf8_lossy(&rest[extra_len + id_len..]).into_owned();
        snapshots.push(Qcow2Snapshot {
            id,
            name,
            date_sec: be_u32(&fixed, 16),
            date_nsec: be_u32(&fixed, 20),
            vm_clock_nsec: be_u64(&fixed, 24),
            vm_state_size,
            disk_size,
        });
        let entry = 40 + (extra_len + id_len + name_len) as u64;
        at += entry.div_ceil(8) * 8;
    }
    Ok((h, snapshots))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built version 2 header with a backing file and one snapshot.
    fn v2_image() -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[0..4].copy_from_slice(&MAGIC);
        img[4..8].copy_from_slice(&2u32.to_be_bytes());
        img[8..16].copy_from_slice(&1024u64.to_be_bytes());
        img[16..20].copy_from_slice(&8u32.to_be_bytes());
        img[20..24].copy_from_slice(&16u32.to_be_bytes());
        img[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        img[60..64].copy_from_slice(&1u32.to_be_bytes());
        img[64..72].copy_from_slice(&2048u64.to_be_bytes());
        img[1024..1032].copy_from_slice(b"base.img");
        let e = 2048;
        img[e + 12..e + 14].copy_from_slice(&1u16.to_be_bytes());
        img[e + 14..e + 16].copy_from_slice(&3u16.to_be_bytes());
        img[e + 16..e + 20].copy_from_slice(&1_700_000_000u32.to_be_bytes());
        img[e + 32..e + 36].copy_from_slice(&77u32.to_be_bytes());
        img[e + 40..e + 41].copy_from_slice(b"1");
        img[e + 41..e + 44].copy_from_slice(b"one");
        img
    }

    #[test]
    fn reads_a_hand_built_v2_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.qcow2");
        std::fs::write(&path, v2_image()).unwrap();
        let (h, snaps) = read_snapshots(&path).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.cluster_size, 65_536);
        assert_eq!(h.backing_file.as_deref(), Some("base.img"));
        assert_eq!(h.backing_format, None);
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].id, "1");
        assert_eq!(snaps[0].name, "one");
        assert_eq!(snaps[0].date_sec, 1_700_000_000);
        assert_eq!(snaps[0].vm_state_size, 77);
    }

    #[test]
    fn refuses_damage_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.qcow2");
        // Not qcow2 at all.
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        assert!(matches!(
            read_header(&path),
            Err(Qcow2Error::Invalid { .. })
        ));
        // A snapshot table past the end of the file.
        let mut img = v2_image();
        img[64..72].copy_from_slice(&(1u64 << 40).to_be_bytes());
        std::fs::write(&path, &img).unwrap();
        let err = read_snapshots(&path).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
        // A backing name length over QEMU's limit.
        let mut img = v2_image();
        img[16..20].copy_from_slice(&5000u32.to_be_bytes());
        std::fs::write(&path, &img).unwrap();
        read_header(&path).unwrap_err();
        // Every truncation of a valid image errors or parses; none panics.
        let img = v2_image();
        for cut in (0..img.len()).step_by(7) {
            std::fs::write(&path, &img[..cut]).unwrap();
            let _ = read_snapshots(&path);
        }
    }
}
