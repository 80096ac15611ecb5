//! Boots the Linux test guest, runs one shell script in it and prints what
//! it wrote, with timings; for trying LVM or btrfs commands by hand:
//!
//! ```sh
//! cargo xtask testvm build
//! cargo run -p testvm --example run -- 'pvcreate /dev/disk/by-id/virtio-scratch0 && pvs'
//! ```
//!
//! The guest gets one 1 GiB scratch disk. `VIRTSNAP_TESTVM_KEEP=1` keeps
//! its run directory (console log, disk) afterwards.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use testvm::{Options, TestVm};

fn main() -> ExitCode {
    let script = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    if script.is_empty() {
        eprintln!("usage: cargo run -p testvm --example run -- SCRIPT");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let options = Options::new()
        .disk(1 << 30)
        .command_timeout(Duration::from_secs(600));
    let vm = match TestVm::boot(&options) {
        Ok(vm) => vm,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ran = Instant::now();
    let output = match vm.run(&script) {
        Ok(output) => output,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", output.stdout);
    eprint!("{}", output.stderr);
    eprintln!(
        "exit status {}; boot {:.2} s, script {:.2} s, total {:.2} s",
        output.rc,
        vm.boot_time().as_secs_f64(),
        ran.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(vm);
    ExitCode::from(u8::try_from(output.rc).unwrap_or(1))
}
