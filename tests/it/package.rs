//! The Debian package that `cargo deb` builds (README, "The Debian package"):
//! lintian finds no error in it, and in a fresh Debian root (debootstrap
//! minbase) `apt-get install` takes it with its dependencies, the programs
//! run, the screen's example configuration checks, the system user exists,
//! `systemd-analyze verify` accepts the installed units, and a purge is
//! clean.
//!
//! The package is `target/debian/gongkai_<version>-1_<arch>.deb`, or the file
//! `GONGKAI_DEB` names: this test does not build it (CI runs `cargo deb`
//! first). The debootstrapped root is cached as `target/debootstrap/*.tar`,
//! so that only the first run downloads the base system. The test needs root
//! (chroot, mounting /proc) and the archive on the network. The submodule
//! `vm` runs the package's screen in a virtual machine on a virtio GPU.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::common::tools;

mod vm;

const SUITE: &str = "bookworm";

/// The debian/changelog entry names the crate's version, with revision 1 as
/// in `[package.metadata.deb]`: a release bumps both.
#[test]
fn the_changelog_names_the_crates_version() {
    let changelog = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/changelog"),
    )
    .unwrap();
    let first = changelog.lines().next().unwrap();
    let expected = format!("gongkai ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&expected),
        "{first:?} should start with {expected:?}"
    );
}

#[test]
fn the_package_passes_lintian_and_installs_in_a_fresh_debian_root() {
    let test = "the_package_passes_lintian_and_installs_in_a_fresh_debian_root";
    let needed = [
        "debootstrap",
        "lintian",
        "dpkg-deb",
        "chroot",
        "mount",
        "umount",
        "tar",
    ];
    if !tools(test, &needed) || !is_root(test) {
        return;
    }
    let Some(deb) = find_deb(test) else {
        return;
    };
    eprintln!("package: {}", deb.display());

    // What the package declares: both programs, the units, the user; the
    // screen binary drawing on a bare display needs libinput and libudev.
    let depends = run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Depends"));
    let names: Vec<&str> = depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    for dependency in [
        "systemd",
        "udev",
        "libinput10",
        "libudev1",
        "libxkbcommon0",
        "libc6",
    ] {
        assert!(
            names.contains(&dependency),
            "Depends lacks {dependency}: {depends}"
        );
    }
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/gongkaid",
        "./usr/bin/gongkai",
        "./usr/lib/systemd/system/gongkaid.service",
        "./usr/lib/systemd/system/gongkaid-headless.service",
        "./usr/lib/systemd/system/gongkai-office.service",
        "./usr/lib/sysusers.d/gongkai.conf",
        "./usr/lib/udev/rules.d/70-gongkai-backlight.rules",
        "./usr/share/doc/gongkai/examples/gongkaid.toml",
        "./usr/share/doc/gongkai/examples/mosquitto/gongkai-acl",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{contents}"
        );
    }

    let started = Instant::now();
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error", "--no-tag-display-limit"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&lintian.stdout).into_owned();
    let count = |level: &str| {
        report
            .lines()
            .filter(|l| l.starts_with(&format!("{level}: ")))
            .count()
    };
    eprintln!(
        "lintian: {} errors, {} warnings, {} informational ({:.0} s)\n{report}",
        count("E"),
        count("W"),
        count("I"),
        started.elapsed().as_secs_f64()
    );
    assert!(
        lintian.status.success() && count("E") == 0,
        "lintian reports errors:\n{report}{}",
        String::from_utf8_lossy(&lintian.stderr)
    );

    let root = Root::fresh();
    std::fs::copy(&deb, root.path("tmp/gongkai.deb")).unwrap();
    let started = Instant::now();
    root.run(&["apt-get", "update", "-qq"]);
    let updated = started.elapsed();
    let started = Instant::now();
    root.run(&[
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "/tmp/gongkai.deb",
    ]);
    eprintln!(
        "package: apt-get update {:.0} s, apt-get install {:.0} s",
        updated.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let example = "/usr/share/doc/gongkai/examples/gongkaid.toml";
    let check = root.run(&["gongkaid", "--config", example, "--check"]);
    assert_eq!(check.trim(), format!("{example}: ok"));
    let version = root.run(&["gongkaid", "--version"]);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    root.run(&["gongkai", "--help"]);
    let user = root.run(&["getent", "passwd", "gongkaid"]);
    assert!(user.contains(":/var/lib/gongkaid:"), "{user}");
    for group in ["video", "render", "input", "gongkaid"] {
        root.run(&["getent", "group", group]);
    }
    let units = [
        "/usr/lib/systemd/system/gongkaid.service",
        "/usr/lib/systemd/system/gongkaid-headless.service",
        "/usr/lib/systemd/system/gongkai-office.service",
    ];
    let mut verify = vec!["systemd-analyze", "verify", "--man=no"];
    verify.extend(units);
    let out = root.output(&verify);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify in the root:\n{said}"
    );
    // Enabled on installation (each starts once configured), the headless
    // variant not.
    let wants = root.path("etc/systemd/system/multi-user.target.wants");
    for (unit, enabled) in [
        ("gongkaid.service", true),
        ("gongkai-office.service", true),
        ("gongkaid-headless.service", false),
    ] {
        // The links point into the root's /lib: look at the links themselves.
        let link = wants.join(unit).symlink_metadata().is_ok();
        assert_eq!(link, enabled, "{unit} enabled");
    }

    let started = Instant::now();
    root.run(&["apt-get", "purge", "-y", "-qq", "gongkai"]);
    assert!(!root.path("usr/bin/gongkaid").exists());
    assert!(
        wants.join("gongkaid.service").symlink_metadata().is_err(),
        "a link left after purge"
    );
    eprintln!(
        "package: apt-get purge {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn is_root(test: &str) -> bool {
    let uid = run(Command::new("id").arg("-u"));
    if uid.trim() == "0" {
        return true;
    }
    assert!(
        std::env::var("GONGKAI_REQUIRE_ALL").as_deref() != Ok("1"),
        "{test}: needs root (chroot), and GONGKAI_REQUIRE_ALL=1"
    );
    eprintln!("SKIPPED {test}: not root");
    false
}

/// The target directory this test binary was built in.
fn target_dir() -> PathBuf {
    // <target>/debug/deps/it-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// `GONGKAI_DEB`, or the package `cargo deb` wrote for this version.
fn find_deb(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GONGKAI_DEB") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "GONGKAI_DEB={} is no file", path.display());
        return Some(path);
    }
    let prefix = format!("gongkai_{}-1_", env!("CARGO_PKG_VERSION"));
    let dir = target_dir().join("debian");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
    });
    if found.is_none() {
        assert!(
            std::env::var("GONGKAI_REQUIRE_ALL").as_deref() != Ok("1"),
            "{test}: no {prefix}*.deb in {} (run `cargo deb`), and GONGKAI_REQUIRE_ALL=1",
            dir.display()
        );
        eprintln!("SKIPPED {test}: no package (run `cargo deb`)");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A temporary folder for a Debian root. On drop, whatever is still mounted
/// below it (our /proc, or what a failed debootstrap left) is unmounted
/// first; if anything stays mounted the folder is left in place, as deleting
/// through a mount would delete the host's files.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new(prefix: &str, parent: &Path) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .unwrap();
        // A root directory like any other (tempdir makes it 0700, which
        // would keep apt's unprivileged _apt user out).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

/// Mount points at or below `path`, deepest first.
fn mounts_below(path: &Path) -> Vec<String> {
    let base = path.to_string_lossy().into_owned();
    let table = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut found: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/mounts writes a space as \040.
        .map(|m| m.replace("\\040", " "))
        .filter(|m| *m == base || m.starts_with(&format!("{base}/")))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let dir = self.0.take().unwrap();
        for mount in mounts_below(dir.path()) {
            let ok = Command::new("umount").arg(&mount).status();
            if !ok.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&mount).status();
            }
        }
        let left = mounts_below(dir.path());
        if !left.is_empty() {
            eprintln!(
                "still mounted below {}: {left:?}; the folder is left in place",
                dir.path().display()
            );
            let _ = dir.keep();
        }
    }
}

/// A fresh Debian root with /proc mounted.
struct Root {
    dir: Scratch,
}

impl Root {
    /// Unpacks the cached base system, making it with debootstrap first if
    /// there is none yet.
    fn fresh() -> Root {
        let cache = target_dir()
            .join("debootstrap")
            .join(format!("{SUITE}-minbase.tar"));
        if !cache.exists() {
            make_base(&cache);
        }
        let started = Instant::now();
        let dir = Scratch::new("gongkai-root-", &target_dir());
        run(Command::new("tar")
            .arg("-xf")
            .arg(&cache)
            .arg("-C")
            .arg(dir.path()));
        eprintln!(
            "package: base system unpacked in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        // The network as this machine has it.
        std::fs::copy("/etc/resolv.conf", dir.path().join("etc/resolv.conf")).unwrap();
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(dir.path().join("proc")));
        Root { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new("chroot")
            .arg(self.dir.path())
            .args(["/usr/bin/env", "-i"])
            .args([
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `args` in the root; fails the test unless it succeeds.
    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "{args:?} in the root failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// `debootstrap --variant=minbase` into a temporary folder, then a tar of it
/// at `cache` (written beside it first, so that an interrupted run leaves no
/// half a cache).
fn make_base(cache: &Path) {
    let mirror = std::env::var("GONGKAI_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    let started = Instant::now();
    let dir = Scratch::new("debootstrap-", cache.parent().unwrap());
    run(Command::new("debootstrap")
        .args(["--variant=minbase", SUITE])
        .arg(dir.path())
        .arg(&mirror));
    let partial = cache.with_extension("tar.partial");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&partial)
        .arg("-C")
        .arg(dir.path())
        .arg("."));
    std::fs::rename(&partial, cache).unwrap();
    eprintln!(
        "package: debootstrap --variant=minbase {SUITE} took {:.0} s (cached in {})",
        started.elapsed().as_secs_f64(),
        cache.display()
    );
}
