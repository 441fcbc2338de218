//! The packaged `gongkaid` on a real DRM device (issue 11, "prove it in a
//! machine"): a virtual machine with a virtio GPU, a virtio tablet and user
//! networking boots Debian's kernel with an initramfs of busybox and the
//! virtio modules, mounts this machine's root read-only over 9p, starts
//! udev, and runs the `gongkaid` of the Debian package (extracted with
//! `dpkg-deb -x`: its `kms` build) as a kiosk on Slint's linuxkms backend,
//! against a Mosquitto of the test's own on this machine. The package's
//! office CLI signs and publishes a sample notice. The test reads the VM's
//! own framebuffer through QEMU's QMP `screendump`:
//!
//! - the notice is drawn: the header band is there and the notice's QR
//!   code decodes, from the VM's frame, to the notice's `qr_url` (a black
//!   frame or the kernel's console cannot pass);
//! - a touch through the VM's tablet (QMP `input-send-event`, absolute
//!   axes) opens the kiosk's home screen: its category tiles fill the next
//!   frame, and the screen's log says so.
//!
//! The package is found as `package.rs` finds it (`GONGKAI_DEB`, or
//! `target/debian`). Needs `qemu-system-x86_64` (qemu-system-x86), a kernel
//! in `/boot` with its modules (linux-image-amd64), a static busybox
//! (busybox-static), `modprobe` and `dpkg-deb`; without them the test
//! prints SKIPPED, and fails under `GONGKAI_REQUIRE_ALL=1`. KVM is used
//! where `/dev/kvm` opens, TCG otherwise. Every wait has a deadline; QEMU
//! is killed on drop, and the guest's console is printed when the test
//! fails. `GONGKAI_RENDER_DIR` keeps the frames as PNG files.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Mosquitto};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
/// Where QEMU's user network puts this machine, seen from the guest.
const HOST_FROM_GUEST: &str = "10.0.2.2";
/// Boot: from QEMU's start to the guest's network being up.
const BOOT_WITHIN: Duration = Duration::from_secs(120);
/// From the network being up to the notice on the screen (udev, the
/// daemon's start, its first connection and frame, under TCG).
const NOTICE_WITHIN: Duration = Duration::from_secs(240);
/// From the touch to the home screen.
const HOME_WITHIN: Duration = Duration::from_secs(120);

/// The header band and the home screen's tiles (as `window.rs` knows them).
const BAND: [u8; 3] = [0x1f, 0x4e, 0x79];
const TILE: [u8; 3] = [0xee, 0xf3, 0xf9];

#[test]
fn the_packaged_screen_draws_the_notice_on_a_virtio_gpu_and_a_touch_opens_home() {
    let test = "package::vm";
    let needed = [
        "qemu-system-x86_64",
        "dpkg-deb",
        "modprobe",
        "busybox",
        "udevadm",
    ];
    if !common::tools(test, &needed) {
        return;
    }
    let Some(kernel) = Kernel::find(test) else {
        return;
    };
    let Some(deb) = super::find_deb(test) else {
        return;
    };
    let Some(broker) = Mosquitto::start(test, "") else {
        return;
    };
    let started = Instant::now();
    eprintln!(
        "vm: package {}, kernel {}",
        deb.display(),
        kernel.image.display()
    );

    // The guest mounts a tmpfs on /tmp: the test's files live under
    // target/, which the guest sees at the same path.
    let dir = tempfile::Builder::new()
        .prefix("vm-")
        .tempdir_in(super::target_dir())
        .unwrap();
    let root = dir.path().join("package");
    super::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let gongkai = root.join("usr/bin/gongkai");
    let gongkaid = root.join("usr/bin/gongkaid");

    // The office: keys, the sample notice signed twice, published with the
    // package's own CLI to the test's broker.
    let c = common::community("vm");
    let office = Office::new(&gongkai, dir.path());
    let qr_url = format!("https://office.example/n/{c}");
    let envelope = office.sign_both(&sample_notice(&c, &qr_url));
    let said = office.run(&[
        "publish",
        "--broker",
        &broker.url(),
        "--key",
        office.key("office").to_str().unwrap(),
        envelope.to_str().unwrap(),
    ]);
    assert!(said.contains("manifest version 1"), "{said}");

    // The screen: a kiosk at the VM's resolution, its store in the guest's
    // tmpfs, its broker this machine's Mosquitto.
    let config = dir.path().join("screen.toml");
    std::fs::write(
        &config,
        format!(
            r#"[screen]
id = "{screen}"
community = "{c}"
mode = "kiosk"
[mqtt]
url = "mqtt://{HOST_FROM_GUEST}:{port}"
[trust]
office = ["{office_key}"]
supervisor = ["{supervisor_key}"]
[store]
path = "/tmp/gongkaid/screen.db"
[display]
width = {WIDTH}
height = {HEIGHT}
idle_seconds = 600
"#,
            screen = common::screen_id(&c),
            port = broker.port,
            office_key = office.public("office"),
            supervisor_key = office.public("supervisor"),
        ),
    )
    .unwrap();
    let checked = super::run(
        Command::new(&gongkaid)
            .arg("--config")
            .arg(&config)
            .arg("--check"),
    );
    assert!(checked.trim().ends_with(": ok"), "{checked}");

    let initramfs = dir.path().join("initramfs.cpio");
    std::fs::write(
        &initramfs,
        initramfs_archive(&kernel, &init_script(&gongkaid, &config)),
    )
    .unwrap();

    let mut vm = Vm::boot(&kernel, &initramfs, dir.path());
    eprintln!(
        "vm: accelerator {} (prepared in {:.1} s)",
        vm.accelerator(),
        started.elapsed().as_secs_f64()
    );
    // Times from QEMU's start.
    let booted = vm.wait_for_console("GONGKAI-VM: up", BOOT_WITHIN);
    eprintln!("vm: booted, network up, at {:.1} s", booted.as_secs_f64());
    let settled = vm.wait_for_console("GONGKAI-VM: udev settled", NOTICE_WITHIN);
    eprintln!("vm: udev settled at {:.1} s", settled.as_secs_f64());
    let showing = vm.wait_for_console("rotation: showing medical-insurance-2027 v1", NOTICE_WITHIN);
    eprintln!(
        "vm: gongkaid's rotation names the notice at {:.1} s",
        showing.as_secs_f64()
    );

    // The notice is on the VM's display once its QR code reads back.
    let drawn = vm.wait_for_frame("the notice drawn", NOTICE_WITHIN, |frame| {
        frame.near(4, 4, BAND) && frame.qr_codes().contains(&qr_url)
    });
    eprintln!(
        "vm: the notice drawn at {:.1} s",
        vm.started.elapsed().as_secs_f64()
    );
    drawn.save("vm-notice.png");
    assert!(
        drawn.distinct_colours() > 16,
        "a real page has more than a few colours"
    );

    // A touch in the middle of the screen, through the VM's tablet.
    let touched = Instant::now();
    vm.touch(WIDTH / 2, HEIGHT / 2);
    let home = vm.wait_for_frame("the kiosk's home screen", HOME_WITHIN, |frame| {
        frame.count(TILE) > 5000
    });
    eprintln!(
        "vm: the home screen {:.1} s after the touch",
        touched.elapsed().as_secs_f64()
    );
    home.save("vm-home.png");
    assert!(
        home.qr_codes().is_empty(),
        "the home screen replaced the notice's page"
    );
    vm.wait_for_console("kiosk: home screen opened", Duration::from_secs(30));
    eprintln!("vm: whole test {:.1} s", started.elapsed().as_secs_f64());
}

/// The newest kernel in /boot whose modules are installed, and its version.
struct Kernel {
    image: PathBuf,
    version: String,
}

impl Kernel {
    fn find(test: &str) -> Option<Kernel> {
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
        let out = super::run(
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
fn init_script(gongkaid: &Path, config: &Path) -> String {
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
fn initramfs_archive(kernel: &Kernel, init: &str) -> Vec<u8> {
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

/// The office's side with the package's `gongkai`: keys, signing.
struct Office<'a> {
    gongkai: &'a Path,
    dir: PathBuf,
}

impl<'a> Office<'a> {
    fn new(gongkai: &'a Path, dir: &Path) -> Office<'a> {
        let office = Office {
            gongkai,
            dir: dir.to_owned(),
        };
        for role in ["office", "supervisor"] {
            let said = office.run(&["keygen", "--out", office.key(role).to_str().unwrap()]);
            let public = said
                .lines()
                .find_map(|l| l.strip_prefix("public: "))
                .unwrap_or_else(|| panic!("keygen names the public key:\n{said}"));
            std::fs::write(office.dir.join(format!("{role}.pub")), public).unwrap();
        }
        office
    }

    fn key(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.key"))
    }

    fn public(&self, role: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{role}.pub"))).unwrap()
    }

    fn run(&self, args: &[&str]) -> String {
        super::run(Command::new(self.gongkai).args(args))
    }

    /// The payload signed by the office, then by the supervisor.
    fn sign_both(&self, payload: &serde_json::Value) -> PathBuf {
        let input = self.dir.join("notice.json");
        std::fs::write(&input, serde_json::to_vec_pretty(payload).unwrap()).unwrap();
        let once = self.dir.join("notice.office.json");
        let twice = self.dir.join("notice.env.json");
        for (role, from, to) in [("office", &input, &once), ("supervisor", &once, &twice)] {
            self.run(&[
                "sign",
                "--key",
                self.key(role).to_str().unwrap(),
                from.to_str().unwrap(),
                "-o",
                to.to_str().unwrap(),
            ]);
        }
        twice
    }
}

/// The medical insurance sample, in the test's community, open around now,
/// with a QR link of its own.
fn sample_notice(community: &str, qr_url: &str) -> serde_json::Value {
    let text = gongkai::samples::ALL
        .iter()
        .find(|(name, _)| *name == "medical-insurance-2027.json")
        .expect("the sample")
        .1;
    let mut payload: serde_json::Value = serde_json::from_str(text).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let rfc = gongkai::protocol::notice::rfc3339;
    payload["community"] = community.into();
    payload["qr_url"] = qr_url.into();
    payload["issued_at"] = rfc(now).into();
    payload["valid_from"] = rfc(now - time::Duration::hours(1)).into();
    payload["valid_until"] = rfc(now + time::Duration::days(30)).into();
    payload
}

/// A QEMU process with its QMP socket; killed on drop, which prints the
/// guest's console when the test is failing.
struct Vm {
    child: Child,
    qmp: Qmp,
    console: PathBuf,
    qemu_log: PathBuf,
    dir: PathBuf,
    started: Instant,
    frames: u32,
    /// Holds the QMP socket, kept out of target/ (a socket's path is
    /// limited to about 100 bytes).
    _socket_dir: tempfile::TempDir,
}

impl Vm {
    fn boot(kernel: &Kernel, initramfs: &Path, dir: &Path) -> Vm {
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir.path().join("qmp");
        let console = dir.join("console.log");
        let qemu_log = dir.join("qemu.log");
        let accelerator = if kvm_works(kernel, dir) { "kvm" } else { "tcg" };
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.arg("-nodefaults")
            .args(["-machine", "pc", "-accel", accelerator])
            .args(["-m", "1024", "-smp", "2"])
            .arg("-kernel")
            .arg(&kernel.image)
            .arg("-initrd")
            .arg(initramfs)
            .args([
                "-append",
                "console=ttyS0 rdinit=/init panic=-1 net.ifnames=0 loglevel=4",
            ])
            .args(["-display", "none", "-vga", "none"])
            .args([
                "-device",
                &format!("virtio-gpu-pci,xres={WIDTH},yres={HEIGHT}"),
            ])
            .args(["-device", "virtio-tablet-pci"])
            .args(["-netdev", "user,id=n", "-device", "virtio-net-pci,netdev=n"])
            .args([
                "-virtfs",
                // remap: the host's root spans several file systems, whose
                // inode numbers would collide in one export.
                "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-no-reboot")
            .stdin(Stdio::null());
        let log = std::fs::File::create(&qemu_log).unwrap();
        qemu.stdout(log.try_clone().unwrap()).stderr(log);
        let started = Instant::now();
        let mut child = qemu.spawn().expect("starting qemu-system-x86_64");
        let qmp = match Qmp::connect(&socket, &mut child) {
            Ok(qmp) => qmp,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "QMP: {e}\n{}",
                    std::fs::read_to_string(&qemu_log).unwrap_or_default()
                );
            }
        };
        Vm {
            child,
            qmp,
            console,
            qemu_log,
            dir: dir.to_owned(),
            started,
            frames: 0,
            _socket_dir: socket_dir,
        }
    }

    fn accelerator(&mut self) -> &'static str {
        let kvm = self.qmp.execute("query-kvm", serde_json::json!({}));
        if kvm["enabled"] == true { "kvm" } else { "tcg" }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Fails the test if QEMU is gone or the guest said it failed.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("QEMU exited ({status})");
        }
        let console = self.console();
        if let Some(line) = console
            .lines()
            .find(|l| l.contains("GONGKAI-VM: failed") || l.contains("GONGKAI-VM: gongkaid exited"))
        {
            panic!("the guest says: {line}");
        }
    }

    /// Waits until the console holds `text`; returns the time since boot.
    fn wait_for_console(&mut self, text: &str, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            if self.console().contains(text) {
                return self.started.elapsed();
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the guest's console within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The VM's display as QEMU holds it.
    fn screendump(&mut self) -> Frame {
        self.frames += 1;
        let path = self.dir.join(format!("frame-{}.ppm", self.frames));
        self.qmp.execute(
            "screendump",
            serde_json::json!({ "filename": path.to_str().unwrap() }),
        );
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        Frame::from_ppm(&bytes).unwrap_or_else(|e| panic!("the screendump: {e}"))
    }

    /// Screendumps every second until one satisfies `ok`.
    fn wait_for_frame(
        &mut self,
        what: &str,
        within: Duration,
        ok: impl Fn(&Frame) -> bool,
    ) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            let frame = self.screendump();
            if frame.width == WIDTH && frame.height == HEIGHT && ok(&frame) {
                return frame;
            }
            self.check_alive();
            if Instant::now() > deadline {
                frame.save("vm-last.png");
                panic!(
                    "{what}: not on the VM's display within {within:?} (the last frame is \
                     {}×{}, {} colours)",
                    frame.width,
                    frame.height,
                    frame.distinct_colours()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// A tap at `(x, y)` of the display: the tablet moves there (absolute
    /// axes, 0 to 32767 across the screen), presses and releases.
    fn touch(&mut self, x: u32, y: u32) {
        let abs = |v: u32, size: u32| (v as u64 * 0x7fff / size as u64) as u32;
        self.qmp.execute(
            "input-send-event",
            serde_json::json!({ "events": [
                { "type": "abs", "data": { "axis": "x", "value": abs(x, WIDTH) } },
                { "type": "abs", "data": { "axis": "y", "value": abs(y, HEIGHT) } },
            ]}),
        );
        for down in [true, false] {
            std::thread::sleep(Duration::from_millis(100));
            self.qmp.execute(
                "input-send-event",
                serde_json::json!({ "events": [
                    { "type": "btn", "data": { "down": down, "button": "left" } },
                ]}),
            );
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let console = self.console();
            let tail: Vec<&str> = console.lines().rev().take(200).collect();
            eprintln!("--- the guest's console (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!(
                "--- QEMU ---\n{}",
                std::fs::read_to_string(&self.qemu_log).unwrap_or_default()
            );
        }
    }
}

/// Whether KVM runs a guest here: `/dev/kvm` opens, and the kernel, booted
/// with KVM, prints its banner within 10 seconds (it takes one). A /dev/kvm that opens is
/// not enough: in some sandboxes QEMU then aborts, or the guest never runs.
fn kvm_works(kernel: &Kernel, dir: &Path) -> bool {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !opens {
        return false;
    }
    let console = dir.join("kvm-probe.log");
    let Ok(mut probe) = Command::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-machine",
            "pc",
            "-accel",
            "kvm",
            "-m",
            "256",
        ])
        .arg("-kernel")
        .arg(&kernel.image)
        // earlyprintk: the banner comes at once, not when the console
        // driver starts.
        .args(["-append", "earlyprintk=ttyS0 loglevel=7 panic=-1"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let works = loop {
        let text = std::fs::read(&console).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("Linux version") {
            break true;
        }
        if Instant::now() > deadline || probe.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = probe.kill();
    let _ = probe.wait();
    works
}

/// QEMU's machine protocol over its unix socket: JSON lines, asynchronous
/// events between the answers.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, qemu: &mut Child) -> Result<Qmp, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) => {
                    if let Some(status) = qemu.try_wait().unwrap() {
                        return Err(format!("QEMU exited ({status})"));
                    }
                    if Instant::now() > deadline {
                        return Err(format!("no socket at {}: {e}", path.display()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        qmp.send("qmp_capabilities", serde_json::json!({}))
    }

    fn read(&mut self) -> Result<serde_json::Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QEMU closed its QMP socket".to_owned()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("{e}: {line}")),
            Err(e) => Err(format!("reading QMP: {e}")),
        }
    }

    fn send(mut self, command: &str, arguments: serde_json::Value) -> Result<Qmp, String> {
        self.request(command, arguments)?;
        Ok(self)
    }

    fn request(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let request = serde_json::json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}").map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let answer = self.read()?;
            if let Some(value) = answer.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = answer.get("error") {
                return Err(format!("{command}: {error}"));
            }
            // An event ("event": …): not the answer.
        }
    }

    fn execute(&mut self, command: &str, arguments: serde_json::Value) -> serde_json::Value {
        self.request(command, arguments)
            .unwrap_or_else(|e| panic!("QMP {e}"))
    }
}

/// An RGB frame from a screendump.
struct Frame {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Frame {
    /// A binary PPM (P6, 8 bits a channel), which QEMU's screendump writes.
    fn from_ppm(bytes: &[u8]) -> Result<Frame, String> {
        let mut fields = Vec::new();
        let mut i = 0;
        while fields.len() < 4 {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) == Some(&b'#') {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if start == i {
                return Err("a truncated PPM header".into());
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).into_owned());
        }
        // One whitespace byte ends the header.
        i += 1;
        let number = |s: &str| s.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
        if fields[0] != "P6" || fields[3] != "255" {
            return Err(format!("not an 8-bit P6 PPM: {fields:?}"));
        }
        let (width, height) = (number(&fields[1])?, number(&fields[2])?);
        let size = (width * height * 3) as usize;
        let rgb = bytes
            .get(i..i + size)
            .ok_or_else(|| format!("{} bytes of pixels, {size} expected", bytes.len() - i))?
            .to_vec();
        Ok(Frame { width, height, rgb })
    }

    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Whether the pixel is `colour`, give or take a rounding.
    fn near(&self, x: u32, y: u32, colour: [u8; 3]) -> bool {
        x < self.width
            && y < self.height
            && self
                .pixel(x, y)
                .iter()
                .zip(colour)
                .all(|(&a, b)| a.abs_diff(b) <= 4)
    }

    /// Pixels of `colour`, sampled every 4 pixels.
    fn count(&self, colour: [u8; 3]) -> usize {
        (0..self.height)
            .step_by(4)
            .flat_map(|y| (0..self.width).step_by(4).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y) == colour)
            .count()
    }

    fn distinct_colours(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for p in self.rgb.chunks(3) {
            seen.insert([p[0], p[1], p[2]]);
            if seen.len() > 1000 {
                break;
            }
        }
        seen.len()
    }

    /// What every QR code in the frame decodes to.
    fn qr_codes(&self) -> Vec<String> {
        let (w, h) = (self.width as usize, self.height as usize);
        let luma: Vec<u8> = self
            .rgb
            .chunks(3)
            .map(|p| ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114) / 1000) as u8)
            .collect();
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| luma[y * w + x]);
        prepared
            .detect_grids()
            .iter()
            .filter_map(|g| g.decode().ok().map(|(_, content)| content))
            .collect()
    }

    /// Kept as a PNG under `GONGKAI_RENDER_DIR`, if set.
    fn save(&self, name: &str) {
        if let Ok(dir) = std::env::var("GONGKAI_RENDER_DIR") {
            let rgba: Vec<u8> = self
                .rgb
                .chunks(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            let png = gongkai::ui::png(&rgba, self.width, self.height).unwrap();
            std::fs::write(Path::new(&dir).join(name), png).unwrap();
        }
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

#[test]
fn a_ppm_frame_reads_back_its_pixels() {
    let mut ppm = b"P6\n# QEMU\n2 1\n255\n".to_vec();
    ppm.extend_from_slice(&[1, 2, 3, 0x1f, 0x4e, 0x79]);
    let frame = Frame::from_ppm(&ppm).unwrap();
    assert_eq!((frame.width, frame.height), (2, 1));
    assert_eq!(frame.pixel(0, 0), [1, 2, 3]);
    assert!(frame.near(1, 0, BAND));
    assert!(Frame::from_ppm(&ppm[..ppm.len() - 1]).is_err(), "truncated");
    assert!(Frame::from_ppm(b"P3\n2 1\n255\n").is_err(), "not binary");
}
