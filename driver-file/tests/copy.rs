//! The copy helpers on their own: hashes, sparse copies, temporary names,
//! rename without replacing, temporary files removed unless committed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use driver_file::copy::{self, Existing, TempFile};

#[test]
fn sha256_of_known_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc");
    fs::write(&path, b"abc").unwrap();
    assert_eq!(
        copy::sha256_file(&path).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    fs::write(&path, b"").unwrap();
    assert_eq!(
        copy::sha256_file(&path).unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn copy_sparse_copies_data_and_keeps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("src");
    {
        let mut f = File::create(&src_path).unwrap();
        f.set_len(32 << 20).unwrap();
        f.write_all(b"head").unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"tail", (32 << 20) - 4).unwrap();
    }
    let src = File::open(&src_path).unwrap();
    let dst_path = dir.path().join("dst");
    let dst = File::create(&dst_path).unwrap();
    let mut last = (0, 0);
    let data = copy::copy_sparse(&src, &dst, &mut |d, t| {
        assert!(d >= last.0);
        last = (d, t);
        Ok(())
    })
    .unwrap();
    assert_eq!(last, (32 << 20, 32 << 20));
    assert!(data < 32 << 20, "holes were copied: {data} bytes");
    assert_eq!(fs::read(&dst_path).unwrap(), fs::read(&src_path).unwrap());
    assert!(
        fs::metadata(&dst_path).unwrap().blocks()
            <= fs::metadata(&src_path).unwrap().blocks() + 2048
    );
}

#[test]
fn a_progress_error_stops_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("src");
    fs::write(&src_path, vec![1u8; 20 << 20]).unwrap();
    let src = File::open(&src_path).unwrap();
    let dst = File::create(dir.path().join("dst")).unwrap();
    let err = copy::copy_file(&src, &dst, &mut |d, _| {
        if d > 0 {
            Err(io::Error::other("stop"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "stop");
}

#[test]
fn temp_names_fit_and_hide() {
    let dir = tempfile::tempdir().unwrap();
    let t = copy::temp_path(&dir.path().join("disk.img.s1"));
    assert_eq!(t, dir.path().join(".disk.img.s1.virtsnap-tmp"));
    let long = "x".repeat(255);
    let t = copy::temp_path(&dir.path().join(&long));
    let name = t.file_name().unwrap().as_bytes();
    assert_eq!(name.len(), 255);
    assert!(name.starts_with(b".x"));
    assert!(t.to_string_lossy().ends_with(copy::TEMP_SUFFIX));
    // The filesystem takes it.
    fs::write(&t, b"").unwrap();
}

#[test]
fn temp_files_go_unless_committed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    fs::write(copy::temp_path(&target), b"stale").unwrap();
    let tmp = TempFile::beside(&target).unwrap();
    assert_eq!(
        fs::metadata(tmp.path()).unwrap().len(),
        0,
        "stale one replaced"
    );
    let path = tmp.path().to_path_buf();
    drop(tmp);
    assert!(!path.exists());

    let tmp = TempFile::beside(&target).unwrap();
    tmp.file().write_all_at_start(b"new");
    tmp.commit(&target, Existing::Refuse).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert!(!path.exists());

    // Refused over an existing file, which stays; the temporary goes.
    let tmp = TempFile::beside(&target).unwrap();
    tmp.file().write_all_at_start(b"newer");
    let err = tmp.commit(&target, Existing::Refuse).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&target).unwrap(), b"new");
    assert!(!path.exists());

    let tmp = TempFile::beside(&target).unwrap();
    tmp.file().write_all_at_start(b"newest");
    tmp.commit(&target, Existing::Replace).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"newest");
    copy::sync_parent(&target).unwrap();
}

trait WriteAtStart {
    fn write_all_at_start(&self, data: &[u8]);
}

impl WriteAtStart for File {
    fn write_all_at_start(&self, data: &[u8]) {
        std::os::unix::fs::FileExt::write_all_at(self, data, 0).unwrap();
    }
}
