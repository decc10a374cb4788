//! The tarball unpacker: any bytes as GitHub's gzip tarball (and as a plain
//! tar stream, as `git archive` writes), unpacked into a scratch directory
//! that nothing may escape, within a small size limit.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nbci_shared::util::archive::{read_files, unpack_tar_within, unpack_tarball_within};

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("scratch")).path()
}

fuzz_target!(|data: &[u8]| {
    let root = scratch();
    let dest = root.join("checkout");
    let _ = std::fs::remove_dir_all(&dest);
    let _ = unpack_tarball_within(data, &dest, 1 << 20);
    let _ = std::fs::remove_dir_all(&dest);
    let _ = unpack_tar_within(data, &dest, 1 << 20);
    let wanted = ["a.ipynb".to_owned()].into_iter().collect();
    let _ = read_files(data, &wanted, 1 << 20);
    // Nothing may appear beside the checkout.
    for entry in std::fs::read_dir(root).expect("scratch").flatten() {
        assert_eq!(entry.file_name(), "checkout", "written outside the checkout");
    }
});
