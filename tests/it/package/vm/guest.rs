//! What the virtual machine boots: the kernel of /boot, and an initramfs
//! (cpio) of a static busybox, the virtio modules and an /init that mounts
//! this machine's root over 9p, starts udev and runs the packaged daemon.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::HOST_FROM_GUEST;

/// The newest kernel in /boot whose modules are installed, and its version.
pub(super) struct Kernel {
    pub(super) image: PathBuf,
    version: String,
}

impl Kernel {
    pub(super) fn find(test: &str) -> Option<Kernel> {
        let mut found: Vec<Kernel> = std::fs::read_dir("/boot")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix("vmlinuz-")?.to_owned();
                Path::new("/lib/modules")
                    .join(&version)
                    .join("modules.dep")
                    .exists()
                    .then(|| Kernel {
                        image: e.path(),
                        version,
                    })
            })
            .collect();
        found.sort_by(|a, b| a.version.cmp(&b.version));
        let readable = found
            .last()
            .is_some_and(|k| std::fs::File::open(&k.image).is_ok());
        if !readable {
            let why = match found.last() {
                Some(k) => format!("{} is not readable (root needed)", k.image.display()),
                None => "no /boot/vmlinuz-* with its modules (linux-image-amd64)".to_owned(),
            };
            assert!(
                std::env::var("GONGKAI_REQUIRE_ALL").as_deref() != Ok("1"),
                "{test}: {why}, and GONGKAI_REQUIRE_ALL=1"
            );
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        found.pop()
    }

    /// The modules the guest loads, in the order `modprobe --show-depends`
    /// gives (each dependency before its users, each once).
    fn modules(&self) -> Vec<PathBuf> {
        let out = super::super::run(
            Command::new("modprobe")
                .args(["-a", "-S", &self.version, "--show-depends"])
                .args([
                    "virtio_pci",
                    "9p",
                    "9pnet_virtio",
                    "virtio_net",
                    "virtio_gpu",
                    "virtio_input",
                    "evdev",
                ]),
        );
        let mut modules: Vec<PathBuf> = Vec::new();
        // "insmod PATH [options]"; a built-in module says "builtin NAME".
        for path in out.lines().filter_map(|l| l.strip_prefix("insmod ")) {
            let path = PathBuf::from(path.split_whitespace().next().unwrap());
            if !modules.contains(&path) {
                modules.push(path);
            }
        }
        assert!(!modules.is_empty(), "no modules to load:\n{out}");
        modules
    }
}

/// A module's bytes, decompressed where the kernel package compresses them
/// (busybox's insmod takes plain ones).
fn module_bytes(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).unwrap(),
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(path)
                .output()
                .unwrap_or_else(|e| panic!("{tool} for {name}: {e}"));
            assert!(out.status.success(), "{tool} -dc {name} failed");
            out.stdout
        }
    }
}

/// The static busybox, refused if it needs a dynamic loader (the initramfs
/// holds no C library).
fn static_busybox() -> Vec<u8> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox");
    let bytes = std::fs::read(path).unwrap();
    assert!(
        !elf_has_interpreter(&bytes),
        "{path} is linked dynamically: install busybox-static"
    );
    bytes
}

/// Whether a 64-bit little-endian ELF file names a program interpreter.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    assert!(elf.starts_with(b"\x7fELF\x02\x01"), "an x86-64 ELF file");
    let u16_at = |i: usize| u16::from_le_bytes(elf[i..i + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        // PT_INTERP
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

/// The guest's /init: modules, the host's root over 9p (read-only, with
/// tmpfs on /tmp and /run), the network, udev (libinput classifies input
/// devices by its database), then the packaged daemon. Each stage says
/// `GONGKAI-VM: …` on the console; a failure powers the guest off.
pub(super) fn init_script(gongkaid: &Path, config: &Path) -> String {
    let udevd = [
        "/lib/systemd/systemd-udevd",
        "/usr/lib/systemd/systemd-udevd",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("systemd-udevd (the udev package)");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
say() {{ echo "GONGKAI-VM: $*"; }}
fail() {{ say "failed: $*"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do insmod "$m" || fail "insmod $m"; done
say modules loaded
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /mnt || fail "mounting the host's root"
for d in tmp run; do mount -t tmpfs tmpfs /mnt/$d || fail "tmpfs on /$d"; done
mount -t proc proc /mnt/proc && mount -t sysfs sysfs /mnt/sys && mount -t devtmpfs devtmpfs /mnt/dev || fail "the API file systems"
mkdir -p /mnt/dev/shm && mount -t tmpfs tmpfs /mnt/dev/shm
ip link set lo up || fail loopback
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via {HOST_FROM_GUEST} || fail "the network"
say up
# udevadm ignores requests in a chroot unless told that this one is meant.
export SYSTEMD_IGNORE_CHROOT=1
chroot /mnt {udevd} --daemon || fail udevd
chroot /mnt udevadm trigger --action=add || fail "udevadm trigger"
chroot /mnt udevadm settle --timeout=60 || fail "udevadm settle"
say udev settled
ls -l /dev/dri /dev/input
for e in /dev/input/event*; do
  echo "$e: $(chroot /mnt udevadm info --query=property "$e" | grep '^ID_INPUT' | tr '\n' ' ')"
done
(
  chroot /mnt /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8 \
    RUST_LOG=info SLINT_BACKEND=linuxkms {gongkaid} --config {config}
  say "gongkaid exited with $?"
) 2>&1 | cat
poweroff -f
"#,
        gongkaid = gongkaid.display(),
        config = config.display(),
    )
}

/// An initramfs (cpio, newc): busybox, /init, the modules in load order,
/// /dev/console, and the mount points.
pub(super) fn initramfs_archive(kernel: &Kernel, init: &str) -> Vec<u8> {
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "mnt", "modules"] {
        cpio.entry(d, 0o040755, 0, &[]);
    }
    // The console init writes to (character device 5:1).
    cpio.entry("dev/console", 0o020600, (5 << 8) | 1, &[]);
    cpio.entry("bin/busybox", 0o100755, 0, &static_busybox());
    cpio.entry("init", 0o100755, 0, init.as_bytes());
    for (i, module) in kernel.modules().iter().enumerate() {
        let name = module.file_name().unwrap().to_string_lossy();
        let name = name
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .to_owned();
        cpio.entry(
            &format!("modules/{i:03}-{name}"),
            0o100644,
            0,
            &module_bytes(module),
        );
    }
    cpio.finish()
}

/// A cpio archive in the "newc" format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    /// `rdev` is major << 8 | minor, for device nodes.
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }
}

#[test]
fn a_cpio_entry_is_padded_to_four_bytes_and_the_archive_ends_with_its_trailer() {
    let mut cpio = Cpio::default();
    cpio.entry("init", 0o100755, 0, b"#!x");
    let archive = cpio.finish();
    assert!(archive.starts_with(b"070701"));
    // 110 bytes of header, "init\0" padded to 116, 3 bytes of data padded to 120.
    assert_eq!(&archive[110..115], b"init\0");
    assert_eq!(&archive[116..119], b"#!x");
    assert_eq!(&archive[120..126], b"070701");
    assert_eq!(archive.len() % 4, 0);
    assert!(archive.windows(11).any(|w| w == b"TRAILER!!!\0"));
}
