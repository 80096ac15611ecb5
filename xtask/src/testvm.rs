//! `cargo xtask testvm`: builds the Linux test guest that `testvm::TestVm`
//! boots, following `testvm::recipe`, and says where the build is.
//!
//! The build uses Debian packages only and installs nothing on the host:
//!
//! 1. apt runs with a private state directory (`<cache>/apt`) whose dpkg
//!    status file is empty, so `apt-get -s install` lists the packages'
//!    whole dependency closure; the `.deb` files are downloaded into
//!    `<cache>/debs`, shared by every build.
//! 2. `dpkg-deb -x` unpacks the closure into a staging tree, and the kernel
//!    (the one `linux-image-cloud-amd64` names) into another, in parallel.
//! 3. The recipe's binaries are copied with their shared libraries, found
//!    by the *staged* loader (`ld.so --list`), so the host's libc does not
//!    matter; then their symbolic links, then busybox's applets.
//! 4. Kernel modules: the recipe's list closed over `modules.dep`, which the
//!    staged busybox `depmod` writes (the kernel package ships none).
//! 5. The init script and configuration, a newc cpio archive written here
//!    (sorted, every mtime 0), compressed with `gzip -n`.
//! 6. The result is renamed into `<cache>/<key>/` (`vmlinuz`, `initrd.img`,
//!    `manifest.txt`), so a build is there whole or not at all. Staging
//!    trees are removed; a failed build's are kept for a look until the
//!    next build removes them.
//!
//! Bump `testvm::recipe::BUILD_VERSION` when a change here alters what
//! lands in the guest: the cache key is a hash of the recipe and that
//! version, not of this code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ::testvm::recipe;
use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::{cmd, deps};

/// `cargo xtask testvm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Task {
    /// Build the guest (kernel + initramfs) unless this recipe's build is
    /// cached; print its directory (holding vmlinuz and initrd.img).
    Build {
        /// Build again even when cached (e.g. to pick up Debian updates).
        #[arg(long)]
        force: bool,
        /// Refresh the private apt package lists first.
        #[arg(long)]
        update: bool,
    },
    /// Print the directory of this recipe's build; fail when not built.
    Path,
}

/// Runs `task`.
pub fn run(task: &Task) -> Result<()> {
    match *task {
        Task::Build { force, update } => {
            let dir = build(force, update)?;
            println!("{}", dir.display());
            Ok(())
        }
        Task::Path => {
            let dir = recipe::artefact_dir()?;
            if !recipe::is_built(&dir) {
                bail!(
                    "the Linux test guest is not built for this recipe (key {}; looked in {}); \
                     run `cargo xtask testvm build`",
                    recipe::key(),
                    dir.display()
                );
            }
            println!("{}", dir.display());
            Ok(())
        }
    }
}

/// For `cargo xtask test`: builds the guest unless cached, saying which.
pub fn ensure_built() -> Result<PathBuf> {
    let dir = recipe::artefact_dir()?;
    if recipe::is_built(&dir) {
        cmd::announce(&format!(
            "testvm: the Linux test guest is cached at {}",
            dir.display()
        ));
        return Ok(dir);
    }
    build(false, false)
}

/// Builds this recipe's guest into `<cache root>/<key>` unless it is there
/// (or always, with `force`); returns that directory.
fn build(force: bool, update: bool) -> Result<PathBuf> {
    let root = recipe::cache_root()?;
    let key = recipe::key();
    let dir = root.join(&key);
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = lock_builds(&root)?;
    if !force && recipe::is_built(&dir) {
        cmd::announce(&format!(
            "testvm: the Linux test guest is cached at {}",
            dir.display()
        ));
        return Ok(dir);
    }
    cmd::announce(&format!(
        "testvm: building the Linux test guest (recipe key {key}) into {}",
        dir.display()
    ));
    remove_stale_work_dirs(&root)?;
    let work = root.join(format!(".build-{key}-{}", std::process::id()));
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut build = Build {
        started: Instant::now(),
        apt: Apt::new(&root),
        stage: work.join("stage"),
        kstage: work.join("kstage"),
        tree: work.join("initrd-root"),
        out: work.join("out"),
        key,
        used_debs: BTreeSet::new(),
    };
    let result = build.run(update);
    if let Err(err) = result {
        return Err(err.context(format!(
            "building the Linux test guest failed; its staging trees are in {} \
             (removed by the next build)",
            work.display()
        )));
    }
    if dir.exists() {
        let old = work.join("previous");
        fs::rename(&dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
    }
    fs::rename(&build.out, &dir)
        .with_context(|| format!("renaming {} to {}", build.out.display(), dir.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    prune_cache(&root, &build)?;
    let size =
        |file: &str| fs::metadata(dir.join(file)).map_or_else(|_| "?".to_owned(), |m| mib(m.len()));
    build.log(&format!(
        "done: {} ({}), {} ({})",
        recipe::KERNEL_FILE,
        size(recipe::KERNEL_FILE),
        recipe::INITRD_FILE,
        size(recipe::INITRD_FILE)
    ));
    Ok(dir)
}

/// How many builds the cache keeps (for switching between branches whose
/// recipes differ); older ones are removed after a build.
const BUILDS_KEPT: usize = 3;

/// Bounds the cache after a successful build: removes the downloaded
/// packages it did not use (older versions) and all but the newest
/// [`BUILDS_KEPT`] builds.
fn prune_cache(root: &Path, build: &Build) -> Result<()> {
    let mut removed = 0_u64;
    for entry in fs::read_dir(&build.apt.debs)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") && !build.used_debs.contains(&name) {
            removed += entry.metadata().map_or(0, |meta| meta.len());
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    let mut builds = Vec::new();
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        let is_build = path.file_name().is_some_and(|name| {
            let name = name.to_string_lossy();
            name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit())
        });
        let finished = fs::metadata(path.join(recipe::MANIFEST_FILE)).and_then(|m| m.modified());
        if let (true, Ok(finished)) = (is_build, finished) {
            builds.push((finished, path));
        }
    }
    builds.sort();
    for (_, path) in builds.iter().rev().skip(BUILDS_KEPT) {
        removed += dir_size(path);
        fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    if removed > 0 {
        build.log(&format!(
            "pruned {} of old packages and builds from the cache",
            mib(removed)
        ));
    }
    Ok(())
}

/// The bytes of the files directly in `dir`.
fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.metadata().ok())
            .map(|meta| meta.len())
            .sum()
    })
}

/// Holds `<root>/build.lock`, so concurrent builds run one after another.
fn lock_builds(root: &Path) -> Result<File> {
    const WAIT: Duration = Duration::from_secs(20 * 60);
    let path = root.join("build.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
        if !told {
            eprintln!(
                "    testvm: another build holds {}; waiting for it",
                path.display()
            );
            told = true;
        }
        ensure!(
            started.elapsed() < WAIT,
            "another build of the test guest has held {} for {} min; \
             if no build is running, remove that file",
            path.display(),
            WAIT.as_secs() / 60
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Removes the staging directories of earlier builds (failed or killed);
/// none is in use, since the caller holds the build lock.
fn remove_stale_work_dirs(root: &Path) -> Result<()> {
    for entry in fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(".build-"));
        if stale && path.is_dir() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// One build's state.
struct Build {
    started: Instant,
    apt: Apt,
    /// The unpacked userland packages.
    stage: PathBuf,
    /// The unpacked kernel package.
    kstage: PathBuf,
    /// The initramfs tree being assembled.
    tree: PathBuf,
    /// Where the artefacts are written, renamed into place at the end.
    out: PathBuf,
    key: String,
    /// File names of the packages this build used (set by `run`).
    used_debs: BTreeSet<String>,
}

impl Build {
    fn log(&self, message: &str) {
        eprintln!(
            "    testvm [{:5.1}s] {message}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn run(&mut self, update: bool) -> Result<()> {
        self.apt.prepare()?;
        if update || !self.apt.has_lists() {
            self.log("apt-get update (private package lists)");
            self.apt.update()?;
        }
        let (closure, kernel) = match self.resolve_and_download() {
            Ok(found) => found,
            Err(err) => {
                // Usually lists older than the archive (a package replaced by
                // a security update): refresh them and try once more.
                self.log(&format!(
                    "{err:#}; refreshing the package lists and trying again"
                ));
                self.apt.update()?;
                self.resolve_and_download()?
            }
        };

        for deb in closure.iter().chain([&kernel]) {
            let path = self.apt.deb_path(deb)?;
            if let Some(name) = path.file_name() {
                self.used_debs.insert(name.to_string_lossy().into_owned());
            }
        }
        self.log(&format!(
            "unpacking {} packages and {}",
            closure.len(),
            kernel.name
        ));
        for dir in [&self.stage, &self.kstage, &self.tree, &self.out] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let kernel_unpack = spawn_unpack(&self.apt.deb_path(&kernel)?, &self.kstage)?;
        for deb in &closure {
            run_quiet(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(self.apt.deb_path(deb)?)
                    .arg(&self.stage),
            )?;
        }
        wait_for(kernel_unpack, "dpkg-deb -x (the kernel)")?;

        self.log("assembling the initramfs tree");
        self.make_skeleton()?;
        self.copy_binaries()?;
        let modules = self.copy_modules(&kernel)?;
        self.write_config()?;

        self.log("packing the initramfs (newc cpio, gzip)");
        self.pack_initrd()?;
        let kver = kernel_release(&kernel)?;
        let vmlinuz = self.kstage.join(format!("boot/vmlinuz-{kver}"));
        fs::copy(&vmlinuz, self.out.join(recipe::KERNEL_FILE))
            .with_context(|| format!("copying {}", vmlinuz.display()))?;
        self.write_manifest(&closure, &kernel, &modules)
    }

    /// The userland closure and the kernel package, downloaded.
    fn resolve_and_download(&self) -> Result<(Vec<Deb>, Deb)> {
        let closure = self.apt.closure(recipe::PACKAGES)?;
        let kernel = self.apt.kernel(recipe::KERNEL_PACKAGE)?;
        let mut wanted: Vec<&Deb> = closure.iter().collect();
        wanted.push(&kernel);
        let missing: Vec<&Deb> = wanted
            .into_iter()
            .filter(|deb| self.apt.deb_path(deb).is_err())
            .collect();
        if missing.is_empty() {
            self.log(&format!(
                "{} packages and {} already downloaded",
                closure.len(),
                kernel.name
            ));
        } else {
            self.log(&format!(
                "downloading {} of {} packages (with {})",
                missing.len(),
                closure.len() + 1,
                kernel.name
            ));
            self.apt.download(&missing)?;
        }
        Ok((closure, kernel))
    }

    fn make_skeleton(&self) -> Result<()> {
        for dir in [
            "bin", "sbin", "usr/bin", "usr/sbin", "lib64", "etc/lvm", "proc", "sys", "dev", "run",
            "tmp", "mnt", "root", "var",
        ] {
            let path = self.tree.join(dir);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        set_mode(&self.tree.join("tmp"), 0o1777)?;
        for (link, target) in [
            ("var/run", "../run"),
            ("var/lock", "../run/lock"),
            ("etc/mtab", "/proc/self/mounts"),
        ] {
            let path = self.tree.join(link);
            symlink(target, &path).with_context(|| format!("linking {}", path.display()))?;
        }
        Ok(())
    }

    /// The recipe's binaries with their libraries and symbolic links, the
    /// dynamic loader, and busybox with its applets.
    fn copy_binaries(&self) -> Result<()> {
        const LOADER: &str = "lib64/ld-linux-x86-64.so.2";
        let loader = resolve_in(&self.stage, Path::new(LOADER))?;
        let library_path = [
            self.stage.join("lib/x86_64-linux-gnu"),
            self.stage.join("usr/lib/x86_64-linux-gnu"),
        ]
        .iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
        install(&loader, &self.tree.join(LOADER), 0o755)?;

        for binary in recipe::BINARIES {
            let source = resolve_in(&self.stage, Path::new(binary))
                .with_context(|| format!("{binary} is not in the recipe's packages"))?;
            install(&source, &self.tree.join(binary), 0o755)?;
            let listing = capture(
                Command::new(&loader)
                    .arg("--library-path")
                    .arg(&library_path)
                    .arg("--list")
                    .arg(&source),
            )?;
            for library in
                parse_ld_list(&listing).with_context(|| format!("libraries of {binary}"))?
            {
                let relative = library.strip_prefix(&self.stage).map_err(|_| {
                    anyhow!(
                        "{binary} needs {}, which is not in the recipe's packages; \
                         add the package providing it to testvm::recipe::PACKAGES",
                        library.display()
                    )
                })?;
                let target = self.tree.join(relative);
                if !target.exists() {
                    install(&resolve_in(&self.stage, relative)?, &target, 0o755)?;
                }
            }
        }

        // The packages' links to those binaries (lvcreate -> lvm, ...).
        let names: BTreeMap<&str, &str> = recipe::BINARIES
            .iter()
            .filter_map(|path| Some((Path::new(path).file_name()?.to_str()?, *path)))
            .collect();
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin"] {
            let Ok(entries) = fs::read_dir(self.stage.join(dir)) else {
                continue;
            };
            for entry in entries {
                let entry = entry?;
                let Ok(target) = fs::read_link(entry.path()) else {
                    continue;
                };
                let Some(binary) = target
                    .file_name()
                    .and_then(|name| name.to_str())
                    .and_then(|name| names.get(name))
                else {
                    continue;
                };
                let link = self.tree.join(dir).join(entry.file_name());
                if fs::symlink_metadata(&link).is_err() {
                    symlink(format!("/{binary}"), &link)
                        .with_context(|| format!("linking {}", link.display()))?;
                }
            }
        }

        // busybox (static) for every other command.
        let busybox = self.stage.join("bin/busybox");
        install(&busybox, &self.tree.join("bin/busybox"), 0o755)?;
        let applets = capture(Command::new(&busybox).arg("--list-full"))?;
        for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
            let link = self.tree.join(applet);
            if fs::symlink_metadata(&link).is_ok() {
                continue;
            }
            if let Some(parent) = link.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            symlink("/bin/busybox", &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(())
    }

    /// The recipe's kernel modules and their dependencies, with a
    /// `modules.dep` for the guest's modprobe; returns their names.
    fn copy_modules(&self, kernel: &Deb) -> Result<Vec<String>> {
        let kver = kernel_release(kernel)?;
        let busybox = self.stage.join("bin/busybox");
        run_quiet(
            Command::new(&busybox)
                .args(["depmod", "-b"])
                .arg(&self.kstage)
                .arg(&kver),
        )?;
        let source = self.kstage.join("lib/modules").join(&kver);
        let target = self.tree.join("lib/modules").join(&kver);
        let read = |file: &str| {
            fs::read_to_string(source.join(file))
                .with_context(|| format!("reading {}", source.join(file).display()))
        };
        let modules = module_closure(
            recipe::MODULES,
            &read("modules.dep")?,
            &read("modules.builtin")?,
        )?;
        for module in &modules {
            install(&source.join(module), &target.join(module), 0o644)?;
        }
        for file in [
            "modules.builtin",
            "modules.builtin.modinfo",
            "modules.order",
        ] {
            install(&source.join(file), &target.join(file), 0o644)?;
        }
        run_quiet(
            Command::new(&busybox)
                .args(["depmod", "-b"])
                .arg(&self.tree)
                .arg(&kver),
        )?;
        Ok(modules
            .iter()
            .filter_map(|path| Some(Path::new(path).file_name()?.to_string_lossy().into_owned()))
            .collect())
    }

    fn write_config(&self) -> Result<()> {
        for (path, text, mode) in [
            ("init", recipe::INIT_SCRIPT, 0o755),
            ("etc/lvm/lvm.conf", recipe::LVM_CONF, 0o644),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
            ("etc/group", "root:x:0:\n", 0o644),
        ] {
            let path = self.tree.join(path);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            set_mode(&path, mode)?;
        }
        Ok(())
    }

    fn pack_initrd(&self) -> Result<()> {
        let target = self.out.join(recipe::INITRD_FILE);
        let file =
            File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        let mut gzip = Command::new("gzip")
            .args(["-6", "-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting gzip (Debian package gzip)")?;
        let stdin = gzip.stdin.take().context("gzip's stdin")?;
        let mut writer = BufWriter::with_capacity(1 << 20, stdin);
        let written = write_newc(&self.tree, &mut writer).and_then(|()| {
            writer.flush()?;
            Ok(())
        });
        drop(writer);
        let output = gzip.wait_with_output().context("waiting for gzip")?;
        ensure!(
            output.status.success(),
            "gzip failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        written.context("writing the initramfs archive")
    }

    fn write_manifest(&self, closure: &[Deb], kernel: &Deb, modules: &[String]) -> Result<()> {
        let list = |debs: &[Deb]| {
            debs.iter()
                .map(|deb| format!("{}={}", deb.name, deb.version))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let manifest = format!(
            "# The Linux test guest, built by `cargo xtask testvm build`.\n\
             key={}\nbuild_version={}\nkernel={}={}\npackages={}\nbinaries={}\nmodules={}\n",
            self.key,
            recipe::BUILD_VERSION,
            kernel.name,
            kernel.version,
            list(closure),
            recipe::BINARIES.join(" "),
            modules.join(" ")
        );
        let path = self.out.join(recipe::MANIFEST_FILE);
        fs::write(&path, manifest).with_context(|| format!("writing {}", path.display()))
    }
}

/// A Debian package at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Deb {
    name: String,
    version: String,
}

/// apt-get and apt-cache against private state in the cache: the host's
/// sources and configuration, but its own lists and an empty dpkg status.
struct Apt {
    state: PathBuf,
    debs: PathBuf,
    as_root: bool,
}

impl Apt {
    fn new(root: &Path) -> Self {
        Self {
            state: root.join("apt"),
            debs: root.join("debs"),
            as_root: deps::running_as_root(),
        }
    }

    fn prepare(&self) -> Result<()> {
        for dir in [
            self.state.join("lists/partial"),
            self.state.join("cache/archives/partial"),
            self.debs.join("partial"),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Empty: nothing counts as installed, so apt lists every dependency.
        let status = self.state.join("status");
        fs::write(&status, "").with_context(|| format!("writing {}", status.display()))
    }

    fn has_lists(&self) -> bool {
        fs::read_dir(self.state.join("lists")).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| is_package_list(&entry.file_name().to_string_lossy()))
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let option = |name: &str, value: &Path| format!("{name}={}", value.display());
        cmd.args(["-q", "-o"])
            .arg(option("Dir::State::Lists", &self.state.join("lists")))
            .arg("-o")
            .arg(option("Dir::State::status", &self.state.join("status")))
            .arg("-o")
            .arg(option("Dir::Cache", &self.state.join("cache")))
            .arg("-o")
            .arg(option("Dir::Cache::archives", &self.debs))
            // Named explicitly, apt keeps its parsed lists between runs
            // (otherwise every call parses them again, ~1.5 s).
            .arg("-o")
            .arg(option(
                "Dir::Cache::pkgcache",
                &self.state.join("cache/pkgcache.bin"),
            ))
            .arg("-o")
            .arg(option(
                "Dir::Cache::srcpkgcache",
                &self.state.join("cache/srcpkgcache.bin"),
            ))
            .args([
                "-o",
                "APT::Install-Recommends=false",
                "-o",
                "Debug::NoLocking=1",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if self.as_root {
            // Otherwise apt warns that the _apt user cannot read the cache.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd
    }

    fn update(&self) -> Result<()> {
        run_quiet(self.command("apt-get").arg("update"))
    }

    /// The dependency closure of `packages`, as `apt-get -s install` lists it.
    fn closure(&self, packages: &[&str]) -> Result<Vec<Deb>> {
        let plan = capture(
            self.command("apt-get")
                .args(["-s", "install"])
                .args(packages),
        )?;
        let closure = parse_simulation(&plan);
        ensure!(
            packages
                .iter()
                .all(|name| closure.iter().any(|deb| deb.name == *name)),
            "apt-get -s install {} did not list all of them:\n{plan}",
            packages.join(" ")
        );
        Ok(closure)
    }

    /// The kernel package that `meta` (e.g. linux-image-cloud-amd64) depends
    /// on, at its candidate version.
    fn kernel(&self, meta: &str) -> Result<Deb> {
        let show = |package: &str| {
            capture(
                self.command("apt-cache")
                    .args(["show", "--no-all-versions"])
                    .arg(package),
            )
        };
        let fields = control_fields(&show(meta)?);
        let name = fields
            .get("Depends")
            .and_then(|depends| kernel_dependency(depends))
            .with_context(|| format!("{meta} depends on no linux-image-* package"))?;
        let fields = control_fields(&show(&name)?);
        let version = fields
            .get("Version")
            .with_context(|| format!("apt-cache show {name} gave no Version"))?
            .clone();
        Ok(Deb { name, version })
    }

    /// Downloads `debs` into the deb directory.
    fn download(&self, debs: &[&Deb]) -> Result<()> {
        run_quiet(
            self.command("apt-get")
                .arg("download")
                .args(
                    debs.iter()
                        .map(|deb| format!("{}={}", deb.name, deb.version)),
                )
                .current_dir(&self.debs),
        )
    }

    /// The downloaded file of `deb`: `NAME_VERSION_ARCH.deb`, with `:` of an
    /// epoch written `%3a` as apt does.
    fn deb_path(&self, deb: &Deb) -> Result<PathBuf> {
        let prefix = format!("{}_{}_", deb.name, deb.version.replace(':', "%3a"));
        fs::read_dir(&self.debs)
            .with_context(|| format!("listing {}", self.debs.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .find(|file| file.starts_with(&prefix) && file.ends_with(".deb"))
            .map(|file| self.debs.join(file))
            .with_context(|| format!("{}={} is not downloaded", deb.name, deb.version))
    }
}

/// Whether a file of apt's lists directory is a package index
/// (`..._binary-amd64_Packages`, stored compressed as `.lz4`, `.gz`, ...).
fn is_package_list(file: &str) -> bool {
    file.ends_with("_Packages") || file.contains("_Packages.")
}

/// The packages of `apt-get -s install` output: `Inst NAME (VERSION ...)`.
fn parse_simulation(plan: &str) -> Vec<Deb> {
    plan.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let name = rest.split_whitespace().next()?;
            let version = rest.split_once('(')?.1.split_whitespace().next()?;
            Some(Deb {
                name: name.to_owned(),
                version: version.to_owned(),
            })
        })
        .collect()
}

/// The fields of one deb822 stanza (continuation lines joined).
fn control_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|name| fields.get_mut(name)) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.insert(name.to_owned(), value.trim().to_owned());
            last = Some(name.to_owned());
        }
    }
    fields
}

/// The first `linux-image-<release>` package of a Depends field.
fn kernel_dependency(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .filter_map(|alternative| alternative.split_whitespace().next())
        .find(|name| {
            name.strip_prefix("linux-image-")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// The kernel release (`6.1.0-57-cloud-amd64`) of its package.
fn kernel_release(kernel: &Deb) -> Result<String> {
    kernel
        .name
        .strip_prefix("linux-image-")
        .map(str::to_owned)
        .with_context(|| format!("{} is not a linux-image-* package", kernel.name))
}

/// The libraries in `ld.so --list` output (`SONAME => PATH (0x...)`); the
/// loader's own line and the vDSO are left out.
fn parse_ld_list(listing: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in listing.lines() {
        let Some((soname, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        if soname.starts_with('/') {
            continue;
        }
        let path = rest.split(" (").next().unwrap_or_default().trim();
        ensure!(
            path != "not found",
            "{soname} is not in the recipe's packages; add the package providing it to \
             testvm::recipe::PACKAGES"
        );
        libraries.push(PathBuf::from(path));
    }
    Ok(libraries)
}

/// `modules` and everything they depend on per `modules.dep`, as paths
/// relative to the modules directory; builtin modules need no file.
fn module_closure(modules: &[&str], modules_dep: &str, builtin: &str) -> Result<BTreeSet<String>> {
    let key = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        if let Some((path, needs)) = line.split_once(':') {
            let needs = needs.split_whitespace().map(str::to_owned).collect();
            deps.insert(key(path), (path.to_owned(), needs));
        }
    }
    let builtin: BTreeSet<String> = builtin.lines().map(key).collect();
    let mut closure = BTreeSet::new();
    let mut pending: Vec<String> = modules.iter().map(|m| m.replace('-', "_")).collect();
    while let Some(name) = pending.pop() {
        match deps.get(&name) {
            Some((path, needs)) => {
                if closure.insert(path.clone()) {
                    pending.extend(needs.iter().map(|need| key(need)));
                }
            }
            None if builtin.contains(&name) => {}
            None => bail!("kernel module {name} is neither a module nor builtin in this kernel"),
        }
    }
    Ok(closure)
}

/// `path` inside the tree `root`, following symbolic links as they would
/// resolve with `root` as `/` (absolute targets stay inside the tree).
fn resolve_in(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        if name == "." {
            continue;
        }
        let candidate = resolved.join(&name);
        match fs::read_link(root.join(&candidate)) {
            Ok(target) => {
                hops += 1;
                ensure!(
                    hops <= 40,
                    "too many symbolic links under {}",
                    root.join(path).display()
                );
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(name) => Some(name.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
            Err(_) => resolved = candidate,
        }
    }
    let full = root.join(&resolved);
    ensure!(
        full.exists(),
        "{} does not exist",
        root.join(path).display()
    );
    Ok(full)
}

/// Copies `source` to `target` (creating its directory) with `mode`.
fn install(source: &Path, target: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(source, target)
        .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    set_mode(target, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes the tree at `root` as a newc cpio archive (what the kernel
/// unpacks as an initramfs): entries sorted by path, owned by root, every
/// mtime 0, so equal trees give equal archives.
fn write_newc(root: &Path, out: &mut impl Write) -> std::io::Result<()> {
    let mut paths = Vec::new();
    collect_paths(root, Path::new(""), &mut paths)?;
    paths.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    for (index, relative) in paths.iter().enumerate() {
        let full = root.join(relative);
        let meta = fs::symlink_metadata(&full)?;
        let data = if meta.file_type().is_symlink() {
            fs::read_link(&full)?.into_os_string().into_vec()
        } else if meta.is_file() {
            fs::read(&full)?
        } else {
            Vec::new()
        };
        let nlink = if meta.is_dir() { 2 } else { 1 };
        let ino = u32::try_from(index + 1).map_err(std::io::Error::other)?;
        write_newc_entry(
            out,
            ino,
            meta.mode(),
            nlink,
            relative.as_os_str().as_bytes(),
            &data,
        )?;
    }
    write_newc_entry(out, 0, 0, 1, b"TRAILER!!!", &[])
}

fn collect_paths(root: &Path, relative: &Path, paths: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        paths.push(path.clone());
        if is_dir {
            collect_paths(root, &path, paths)?;
        }
    }
    Ok(())
}

/// One newc entry: the 110-byte ASCII header, the name with its NUL padded
/// to 4 bytes, the data padded to 4 bytes.
fn write_newc_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &[u8],
    data: &[u8],
) -> std::io::Result<()> {
    let too_big = || std::io::Error::other("a file of more than 4 GiB in the initramfs");
    let size = u32::try_from(data.len()).map_err(|_| too_big())?;
    let name_size = u32::try_from(name.len() + 1).map_err(|_| too_big())?;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}\
         {dev_major:08x}{dev_minor:08x}{rdev_major:08x}{rdev_minor:08x}{name_size:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        dev_major = 0,
        dev_minor = 0,
        rdev_major = 0,
        rdev_minor = 0,
        check = 0,
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name)?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(header.len() + name.len() + 1)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..pad4(data.len())])
}

/// Bytes needed to reach the next multiple of 4.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Starts `dpkg-deb -x DEB DIR` in the background.
fn spawn_unpack(deb: &Path, dir: &Path) -> Result<Child> {
    Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb (Debian package dpkg)")
}

fn wait_for(child: Child, what: &str) -> Result<()> {
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))?;
    ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Runs `cmd`, returning its stdout; fails with its stderr.
fn capture(cmd: &mut Command) -> Result<String> {
    let line = cmd::display(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    ensure!(
        output.status.success(),
        "`{line}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd`, discarding its output unless it fails.
fn run_quiet(cmd: &mut Command) -> Result<()> {
    capture(cmd).map(drop)
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let mib = bytes as f64 / f64::from(1 << 20);
    format!("{mib:.1} MiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lists_are_recognised_compressed_or_not() {
        assert!(is_package_list(
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
        ));
        assert!(is_package_list(
            "mirror_dists_stable_main_binary-amd64_Packages"
        ));
        assert!(!is_package_list(
            "deb.debian.org_debian_dists_bookworm_InRelease"
        ));
        assert!(!is_package_list("partial"));
    }

    #[test]
    fn simulation_lines_give_names_and_versions() {
        let plan = "NOTE: This is only a simulation!\n\
                    Inst libc6 (2.36-9+deb12u14 Debian:12.13/stable [amd64])\n\
                    Inst zlib1g (1:1.2.13.dfsg-1 Debian:12.13/stable [amd64])\n\
                    Conf libc6 (2.36-9+deb12u14 Debian:12.13/stable [amd64])\n";
        assert_eq!(
            parse_simulation(plan),
            [
                Deb {
                    name: "libc6".into(),
                    version: "2.36-9+deb12u14".into()
                },
                Deb {
                    name: "zlib1g".into(),
                    version: "1:1.2.13.dfsg-1".into()
                },
            ]
        );
    }

    #[test]
    fn the_kernel_is_the_versioned_dependency_of_the_meta_package() {
        let show = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-3\n\
                    Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)\n\
                    Description: Linux for x86-64 cloud\n more text\n\nPackage: other\n";
        let fields = control_fields(show);
        assert_eq!(fields["Version"], "6.1.192-3");
        assert_eq!(fields["Description"], "Linux for x86-64 cloud more text");
        assert_eq!(
            fields["Package"], "linux-image-cloud-amd64",
            "only the first stanza"
        );
        assert_eq!(
            kernel_dependency(&fields["Depends"]).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(
            kernel_dependency("linux-base, linux-image-6.1.0-1-amd64 | linux-image-x"),
            Some("linux-image-6.1.0-1-amd64".into())
        );
        assert_eq!(kernel_dependency("linux-image-amd64-signed"), None);
    }

    #[test]
    fn ld_list_gives_library_paths_and_refuses_missing_ones() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                       \tlibc.so.6 => /s/lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                       \t/lib64/ld-linux-x86-64.so.2 => /s/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ld_list(listing).expect("valid"),
            [PathBuf::from("/s/lib/x86_64-linux-gnu/libc.so.6")]
        );
        let message = parse_ld_list("\tlibfoo.so.1 => not found\n")
            .expect_err("missing")
            .to_string();
        assert!(message.contains("libfoo.so.1"), "{message}");
    }

    #[test]
    fn modules_close_over_their_dependencies_and_builtins_need_no_file() {
        let dep = "kernel/drivers/md/dm-snapshot.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko\n\
                   kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko\n\
                   kernel/drivers/md/dm-mod.ko:\n\
                   kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\n";
        let builtin = "kernel/fs/ext4/ext4.ko\n";
        let closure = module_closure(&["dm_snapshot", "ext4"], dep, builtin).expect("closure");
        assert_eq!(
            closure.into_iter().collect::<Vec<_>>(),
            [
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/drivers/md/dm-mod.ko",
                "kernel/drivers/md/dm-snapshot.ko"
            ]
        );
        let message = module_closure(&["nosuch"], dep, builtin)
            .expect_err("unknown")
            .to_string();
        assert!(message.contains("nosuch"), "{message}");
    }

    #[test]
    fn links_resolve_inside_the_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("lib/x86_64-linux-gnu")).expect("mkdir");
        fs::create_dir_all(root.join("lib64")).expect("mkdir");
        fs::write(root.join("lib/x86_64-linux-gnu/ld.so"), b"elf").expect("write");
        symlink("/lib/x86_64-linux-gnu/ld.so", root.join("lib64/ld")).expect("symlink");
        symlink("../lib/x86_64-linux-gnu/ld.so", root.join("lib64/rel")).expect("symlink");
        for link in ["lib64/ld", "lib64/rel"] {
            assert_eq!(
                resolve_in(root, Path::new(link)).expect("resolves"),
                root.join("lib/x86_64-linux-gnu/ld.so")
            );
        }
        symlink("loop", root.join("loop")).expect("symlink");
        resolve_in(root, Path::new("loop")).expect_err("a loop");
        resolve_in(root, Path::new("missing")).expect_err("absent");
    }

    #[test]
    fn newc_archives_are_aligned_sorted_and_reproducible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).expect("mkdir");
        fs::write(root.join("bin/tool"), b"hello").expect("write");
        fs::write(root.join("init"), b"#!/bin/sh\n").expect("write");
        symlink("/bin/tool", root.join("bin/link")).expect("symlink");
        let archive = |root: &Path| {
            let mut bytes = Vec::new();
            write_newc(root, &mut bytes).expect("archive");
            bytes
        };
        let bytes = archive(root);
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(bytes, archive(root));
        let text = String::from_utf8_lossy(&bytes);
        let order: Vec<usize> = [
            "bin\0",
            "bin/link\0",
            "bin/tool\0",
            "init\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|name| text.find(name).unwrap_or_else(|| panic!("{name} missing")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        // The first header: magic, inode 1, a directory, two links.
        assert!(text.starts_with("070701000000010000"), "{}", &text[..40]);
        assert!(text.contains("hello"));
    }

    #[test]
    fn padding_reaches_a_multiple_of_four() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad4), [0, 3, 2, 1, 0, 3]);
    }
}
