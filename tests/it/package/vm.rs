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
//! where a guest really runs with it, TCG otherwise. Every wait has a
//! deadline; QEMU is killed on drop, and the guest's console is printed
//! when the test fails. `GONGKAI_RENDER_DIR` keeps the frames as PNG files.
//!
//! `guest` makes what the VM boots, `qemu` runs it, `frame` reads its
//! screen.

mod frame;
mod guest;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Mosquitto};
use guest::{Kernel, init_script, initramfs_archive};
use qemu::Vm;

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
